//! The proxy's own connections for catalog introspection and hypopg
//! verification: made with the `--upstream` URL's credentials to the
//! database a client actually uses, closed as soon as the answer is read
//! (test runners DROP DATABASE, which fails while anyone is connected).

use std::sync::Arc;

use qproxy_analyzer::catalog::{self, Catalog, CatalogError};
use qproxy_analyzer::detect::unindexed::Verification;
use qproxy_analyzer::explain::hypopg::{verify_batch, VerifyJob};
use tokio_postgres::NoTls;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::net::upstream::Upstream;

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
    /// Connections go where `upstream` points (a TCP host, or a Unix-domain
    /// socket directory), with its credentials.
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

    /// Checks suggested indexes with hypopg in `database`, all on one
    /// connection, each as the client whose statement it is.
    pub async fn verify_batch(
        &self,
        database: &str,
        jobs: &[VerifyJob<'_>],
    ) -> Result<Vec<Verification>, CatalogError> {
        let config = self.config(database);
        match self.upstream.tls_config() {
            None => verify_batch(&config, NoTls, jobs).await,
            Some(tls) => verify_batch(&config, MakeRustlsConnect::new((**tls).clone()), jobs).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::upstream::UpstreamUrl;
    use std::time::Duration;
    use tokio_postgres::config::SslMode as PgSslMode;

    fn config(url: &str) -> tokio_postgres::Config {
        let url = UpstreamUrl::parse(url).unwrap();
        let upstream = Upstream::new(url, Duration::from_secs(1)).unwrap();
        CatalogConnector::new(Arc::new(upstream)).config("shop")
    }

    #[test]
    fn a_socket_upstream_gives_a_socket_catalog_connection_without_tls() {
        let c =
            config("postgres://app@/ignored?host=/var/run/postgresql&port=6000&sslmode=require");
        assert_eq!(
            c.get_hosts(),
            &[tokio_postgres::config::Host::Unix(
                "/var/run/postgresql".into()
            )]
        );
        assert_eq!(c.get_ports(), &[6000]);
        assert_eq!(c.get_ssl_mode(), PgSslMode::Disable);
        assert_eq!(c.get_dbname(), Some("shop"));
        assert_eq!(c.get_user(), Some("app"));
    }

    #[test]
    fn a_tcp_upstream_keeps_host_and_sslmode() {
        let c = config("postgres://app@db.internal:6543/x?sslmode=require");
        assert_eq!(
            c.get_hosts(),
            &[tokio_postgres::config::Host::Tcp("db.internal".into())]
        );
        assert_eq!(c.get_ssl_mode(), PgSslMode::Require);
    }
}
