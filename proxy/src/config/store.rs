//! The `--store` setting, shared by `qproxy serve` and `qproxy report`: a
//! SQLite file (the embedded default) or a `postgres://` URL, the store a
//! fleet of proxies shares, with a password that no log, error or `Debug`
//! output shows. A pure value: reaching the store is
//! `analysis::store_target`'s job.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use qproxy_analyzer::store::{postgres, StoreError};
use serde::Deserialize;

use super::upstream_url::{UpstreamUrl, UrlError};

/// The findings store unless `--store` says.
pub const DEFAULT_STORE: &str = ".qproxy/findings.db";

/// The schema a PostgreSQL store lives in unless `--store-schema` says.
pub const DEFAULT_STORE_SCHEMA: &str = "qproxy";

/// Why a `--store` value cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreTargetError {
    /// The `postgres://` URL is wrong (never repeated: it may hold a
    /// password).
    #[error("--store")]
    Url(#[from] UrlError),
    /// The schema name is not usable.
    #[error("--store-schema")]
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
    use crate::config::tests::Chain;

    #[test]
    fn paths_and_urls() {
        let file = StoreArg::from(".qproxy/findings.db").target(None).unwrap();
        assert!(
            matches!(&file, StoreTarget::Sqlite(p) if p == &PathBuf::from(".qproxy/findings.db"))
        );

        let pg =
            StoreArg::from("postgresql://fleet:s3cret@db.internal:6543/findings?sslmode=disable")
                .target(None)
                .unwrap();
        let StoreTarget::Postgres { url, schema } = &pg else {
            panic!("{pg}")
        };
        assert_eq!((url.host.as_str(), url.port), ("db.internal", 6543));
        assert_eq!(schema, DEFAULT_STORE_SCHEMA);

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
        let shown = format!("{arg:?} {target} {target:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("fleet:***@db"), "{shown}");

        let bad = StoreArg::from("postgres://fleet:s3cret@db:notaport/findings");
        assert!(!format!("{bad:?}").contains("s3cret"));
        let err = bad.target(None).unwrap_err().chain();
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
            .chain();
        assert!(
            err.contains("--store-schema") && err.contains("invalid store schema name"),
            "{err}"
        );
    }
}
