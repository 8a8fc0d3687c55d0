//! The proxy's own connections for catalog introspection and hypopg
//! verification: made with the `--upstream` URL's credentials to the
//! database a client actually uses, closed as soon as the answer is read
//! (test runners DROP DATABASE, which fails while anyone is connected).

use std::sync::Arc;

use qproxy_analyzer::catalog::{self, Catalog, CatalogError};
use qproxy_analyzer::detect::unindexed::{verify_with_hypopg, Verification};
use tokio_postgres::NoTls;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::upstream::Upstream;

/// Opens catalog connections like the upstream URL says.
#[derive(Clone)]
pub struct CatalogConnector {
    upstream: Arc<Upstream>,
}

impl std::fmt::Debug for CatalogConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogConnector")
            .field("upstream", self.upstream.url())
            .finish()
    }
}

impl CatalogConnector {
    /// Connections go where `upstream` points, with its credentials.
    pub fn new(upstream: Arc<Upstream>) -> Self {
        CatalogConnector { upstream }
    }

    fn config(&self, database: &str) -> tokio_postgres::Config {
        self.upstream
            .url()
            .client_config(Some(database), "qproxy-catalog")
    }

    /// Loads `database`'s catalog and whether it has hypopg.
    pub async fn load(&self, database: &str) -> Result<(Catalog, bool), CatalogError> {
        let config = self.config(database);
        match self.upstream.tls_config() {
            None => {
                let catalog = catalog::load(&config, NoTls).await?;
                let hypopg = catalog.hypopg;
                Ok((catalog, hypopg))
            }
            Some(tls) => {
                let catalog =
                    catalog::load(&config, MakeRustlsConnect::new((**tls).clone())).await?;
                let hypopg = catalog.hypopg;
                Ok((catalog, hypopg))
            }
        }
    }

    /// Checks a suggested index with hypopg in `database`.
    pub async fn verify(
        &self,
        database: &str,
        sql: &str,
        ddl: &str,
    ) -> Result<Verification, CatalogError> {
        let config = self.config(database);
        match self.upstream.tls_config() {
            None => verify_with_hypopg(&config, NoTls, sql, ddl).await,
            Some(tls) => {
                verify_with_hypopg(&config, MakeRustlsConnect::new((**tls).clone()), sql, ddl).await
            }
        }
    }
}
