//! The `--store` setting, shared by `qproxy serve` and `qproxy report`: a
//! SQLite file (the embedded default) or a `postgres://` URL, the store a
//! fleet of proxies shares. A PostgreSQL store is reached the way the
//! upstream is: the same URL syntax, TLS per its `sslmode`, and a password
//! that no log, error or `Debug` output shows.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use qproxy_analyzer::store::{postgres, PgConnector, PgLocation, StoreError, StoreLocation};
use serde::Deserialize;
use tokio_postgres::NoTls;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::net::upstream::{Upstream, UpstreamError, UpstreamUrl};

/// The schema a PostgreSQL store lives in unless `--store-schema` says.
pub const DEFAULT_STORE_SCHEMA: &str = "qproxy";

/// How long the store's TLS setup may wait for the server (the store sets
/// its own limits on connecting and on each operation).
const TLS_SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a `--store` value cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreTargetError {
    /// The `postgres://` URL is wrong (never repeated: it may hold a
    /// password).
    #[error("--store: {0}")]
    Url(#[from] UpstreamError),
    /// The schema name is not usable.
    #[error("--store-schema: {0}")]
    Schema(#[source] StoreError),
}

/// The `--store` value as given. A type of its own so that no `Debug` can
/// print a password in it, and so that clap never quotes it in an error.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct StoreArg(pub String);

impl StoreArg {
    /// Whether it names a PostgreSQL store rather than a file.
    pub fn is_postgres(&self) -> bool {
        let lower = self.0.trim_start().to_ascii_lowercase();
        lower.starts_with("postgres://") || lower.starts_with("postgresql://")
    }

    /// What the value names; `schema` is `--store-schema` (PostgreSQL
    /// only).
    pub fn target(&self, schema: Option<&str>) -> Result<StoreTarget, StoreTargetError> {
        if !self.is_postgres() {
            return Ok(StoreTarget::Sqlite(PathBuf::from(&self.0)));
        }
        let url = UpstreamUrl::parse(self.0.trim())?;
        let schema = schema.unwrap_or(DEFAULT_STORE_SCHEMA).to_string();
        postgres::check_schema_name(&schema).map_err(StoreTargetError::Schema)?;
        Ok(StoreTarget::Postgres { url, schema })
    }
}

impl fmt::Debug for StoreArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.is_postgres() {
            return write!(f, "StoreArg({:?})", self.0);
        }
        match UpstreamUrl::parse(self.0.trim()) {
            Ok(url) => write!(f, "StoreArg({url})"),
            Err(_) => f.write_str("StoreArg(<not a valid URL>)"),
        }
    }
}

impl FromStr for StoreArg {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(StoreArg(s.to_string()))
    }
}

impl From<&str> for StoreArg {
    fn from(s: &str) -> Self {
        StoreArg(s.to_string())
    }
}

impl From<&std::path::Path> for StoreArg {
    fn from(path: &std::path::Path) -> Self {
        StoreArg(path.to_string_lossy().into_owned())
    }
}

/// A resolved `--store`.
#[derive(Clone)]
pub enum StoreTarget {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A schema in a PostgreSQL database.
    Postgres {
        /// Where, and with which credentials.
        url: UpstreamUrl,
        /// `--store-schema`.
        schema: String,
    },
}

impl StoreTarget {
    /// Whether this is a PostgreSQL store.
    pub fn is_postgres(&self) -> bool {
        matches!(self, StoreTarget::Postgres { .. })
    }

    /// The store's location for the analyzer: for PostgreSQL, the
    /// connection settings and the TLS connector its `sslmode` asks for.
    pub fn location(&self) -> Result<StoreLocation, StoreTargetError> {
        let (url, schema) = match self {
            StoreTarget::Sqlite(path) => return Ok(StoreLocation::Sqlite(path.clone())),
            StoreTarget::Postgres { url, schema } => (url, schema),
        };
        let tls = Upstream::new(url.clone(), TLS_SETUP_TIMEOUT)?;
        let connector = match tls.tls_config() {
            None => PgConnector::new(NoTls),
            Some(config) => PgConnector::new(MakeRustlsConnect::new((**config).clone())),
        };
        let config = url.client_config(None, "qproxy-store");
        PgLocation::new(config, schema, connector, url.to_string())
            .map(StoreLocation::from)
            .map_err(StoreTargetError::Schema)
    }
}

impl fmt::Display for StoreTarget {
    /// The path, or the URL with its password hidden and the schema.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreTarget::Sqlite(path) => write!(f, "{}", path.display()),
            StoreTarget::Postgres { url, schema } => write!(f, "{url} (schema {schema})"),
        }
    }
}

impl fmt::Debug for StoreTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreTarget({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_urls() {
        let file = StoreArg::from(".qproxy/findings.db").target(None).unwrap();
        assert!(
            matches!(&file, StoreTarget::Sqlite(p) if p == &PathBuf::from(".qproxy/findings.db"))
        );
        assert!(file.location().is_ok());

        let pg =
            StoreArg::from("postgresql://fleet:s3cret@db.internal:6543/findings?sslmode=disable")
                .target(None)
                .unwrap();
        let StoreTarget::Postgres { url, schema } = &pg else {
            panic!("{pg}")
        };
        assert_eq!((url.host.as_str(), url.port), ("db.internal", 6543));
        assert_eq!(schema, DEFAULT_STORE_SCHEMA);
        let location = pg.location().unwrap();
        assert!(matches!(&location, StoreLocation::Postgres(l) if l.schema() == "qproxy"));

        let other = StoreArg::from("postgres://db/findings")
            .target(Some("staging"))
            .unwrap();
        assert_eq!(
            other.to_string(),
            "postgres://db:5432/findings (schema staging)"
        );
    }

    #[test]
    fn no_output_shows_the_password() {
        let arg = StoreArg::from("postgres://fleet:s3cret@db/findings?sslmode=disable");
        let target = arg.target(None).unwrap();
        let location = target.location().unwrap();
        let shown = format!("{arg:?} {target} {target:?} {location} {location:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("fleet:***@db"), "{shown}");

        let bad = StoreArg::from("postgres://fleet:s3cret@db:notaport/findings");
        assert!(!format!("{bad:?}").contains("s3cret"));
        let err = bad.target(None).unwrap_err().to_string();
        assert!(
            !err.contains("s3cret") && err.starts_with("--store:"),
            "{err}"
        );
    }

    #[test]
    fn schema_names_are_checked() {
        let err = StoreArg::from("postgres://db/findings")
            .target(Some("x; DROP TABLE y"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--store-schema") && err.contains("invalid store schema name"),
            "{err}"
        );
    }
}
