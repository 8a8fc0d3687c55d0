//! The upstream PostgreSQL server: opening connections to it (TCP, then
//! TLS as the URL's `sslmode` asks; or a Unix-domain socket when the URL's
//! host is a directory, as libpq reads it). The URL itself is parsed by
//! configuration (`config::upstream_url`) and re-exported here.
//!
//! Clients authenticate with their own credentials: the URL's user and
//! password serve only the proxy's own catalog connection, and never appear
//! in a log ([`UpstreamUrl`]'s `Display` hides the password).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsConnector;

pub use crate::config::upstream_url::{Endpoint, SslMode, UpstreamUrl, UrlError};
use crate::net::stream::MaybeTls;
use crate::net::tls::{self, Verification};

/// A connection to the upstream, plain or TLS.
pub type UpstreamStream = MaybeTls<tokio_rustls::client::TlsStream<TcpStream>>;

/// Problems with `--upstream` or with reaching it.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The URL does not parse or asks for something unsupported.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// TLS configuration for the upstream failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// TCP (or Unix-socket) connect failed or timed out.
    #[error("cannot connect to upstream {addr}: {reason}")]
    Connect {
        /// host:port (or the socket file) tried.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The server refused TLS although `sslmode` requires it.
    #[error("upstream {0} does not support SSL, but sslmode requires it")]
    TlsRefused(String),
    /// The TLS handshake with the upstream failed.
    #[error("TLS handshake with upstream {addr} failed: {reason}")]
    Handshake {
        /// host:port.
        addr: String,
        /// Why.
        reason: String,
    },
}

/// Opens connections to the upstream: the parsed URL plus its TLS setup,
/// built once at start.
#[derive(Clone)]
pub struct Upstream {
    url: UpstreamUrl,
    tls: Option<TlsConnector>,
    tls_config: Option<Arc<rustls::ClientConfig>>,
    connect_timeout: Duration,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("url", &self.url)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Upstream {
    /// Validates the URL and prepares TLS.
    pub fn new(url: UpstreamUrl, connect_timeout: Duration) -> Result<Self, UpstreamError> {
        let verification = match url.sslmode {
            _ if url.is_socket() => {
                if matches!(
                    url.sslmode,
                    SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
                ) {
                    tracing::info!(
                        sslmode = ?url.sslmode,
                        "the upstream is a Unix-domain socket: sslmode is ignored, as libpq ignores it (no TLS on a local socket)"
                    );
                }
                None
            }
            SslMode::Disable | SslMode::Allow => None,
            SslMode::Prefer | SslMode::Require => Some(Verification::None),
            SslMode::VerifyCa => Some(Verification::Chain),
            SslMode::VerifyFull => Some(Verification::Full),
        };
        let tls_config = verification
            .map(|v| tls::client_config(v, url.sslrootcert.as_deref()))
            .transpose()?;
        let tls = tls_config.clone().map(TlsConnector::from);
        Ok(Upstream {
            url,
            tls,
            tls_config,
            connect_timeout,
        })
    }

    /// The URL (credentials inside are for the catalog connection only).
    pub fn url(&self) -> &UpstreamUrl {
        &self.url
    }

    /// The rustls configuration toward the upstream, when `sslmode` uses TLS.
    pub fn tls_config(&self) -> Option<&Arc<rustls::ClientConfig>> {
        self.tls_config.as_ref()
    }

    /// Opens the socket (TCP or Unix), without TLS or any protocol
    /// message: what `/readyz`'s reachability check needs.
    pub async fn open(&self) -> Result<UpstreamStream, UpstreamError> {
        let connect_err = |reason: String| UpstreamError::Connect {
            addr: self.url.addr(),
            reason,
        };
        let timed_out = |_| connect_err(format!("timed out after {:?}", self.connect_timeout));
        match self.url.endpoint() {
            Endpoint::Tcp { host, port } => {
                let tcp =
                    tokio::time::timeout(self.connect_timeout, TcpStream::connect((host, port)))
                        .await
                        .map_err(timed_out)?
                        .map_err(|e| connect_err(e.to_string()))?;
                tcp.set_nodelay(true).ok();
                Ok(MaybeTls::Plain(tcp))
            }
            Endpoint::Unix(path) => {
                let unix = tokio::time::timeout(self.connect_timeout, UnixStream::connect(path))
                    .await
                    .map_err(timed_out)?
                    .map_err(|e| connect_err(e.to_string()))?;
                Ok(MaybeTls::Unix(unix))
            }
        }
    }

    /// Connects and negotiates TLS per `sslmode`. The returned stream is
    /// ready for a StartupMessage or CancelRequest.
    pub async fn connect(&self) -> Result<UpstreamStream, UpstreamError> {
        let addr = self.url.addr();
        let connect_err = |reason: String| UpstreamError::Connect {
            addr: addr.clone(),
            reason,
        };
        let stream = self.open().await?;
        let Some(connector) = &self.tls else {
            return Ok(stream);
        };
        let mut tcp = match stream {
            MaybeTls::Plain(tcp) => tcp,
            // `new` prepares no TLS for a socket; kept plain all the same.
            other => return Ok(other),
        };
        let mut request = [0u8; 8];
        request[..4].copy_from_slice(&8u32.to_be_bytes());
        request[4..].copy_from_slice(&crate::wire::startup::SSL_REQUEST_CODE.to_be_bytes());
        tcp.write_all(&request)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        match answer[0] {
            b'S' => {
                let name = ServerName::try_from(self.url.host.clone()).map_err(|e| {
                    UpstreamError::Url(UrlError::new(format!("bad host name: {e}")))
                })?;
                let stream =
                    tokio::time::timeout(self.connect_timeout, connector.connect(name, tcp))
                        .await
                        .map_err(|_| UpstreamError::Handshake {
                            addr: addr.clone(),
                            reason: "timed out".into(),
                        })?
                        .map_err(|e| UpstreamError::Handshake {
                            addr: addr.clone(),
                            reason: e.to_string(),
                        })?;
                Ok(MaybeTls::Tls(Box::new(stream)))
            }
            b'N' if self.url.sslmode == SslMode::Prefer => Ok(MaybeTls::Plain(tcp)),
            b'N' => Err(UpstreamError::TlsRefused(addr)),
            other => Err(connect_err(format!(
                "unexpected answer 0x{other:02x} to SSLRequest"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(url: &str) -> UpstreamUrl {
        UpstreamUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn a_socket_upstream_never_uses_tls() {
        for mode in ["disable", "prefer", "require", "verify-full"] {
            let url = socket(&format!("postgres://u@/x?host=/tmp&sslmode={mode}"));
            let upstream = Upstream::new(url, Duration::from_secs(1)).unwrap();
            assert!(upstream.tls_config().is_none(), "sslmode={mode}");
        }
        // The same modes over TCP do prepare TLS.
        let url = socket("postgres://u@h/x?sslmode=require");
        assert!(Upstream::new(url, Duration::from_secs(1))
            .unwrap()
            .tls_config()
            .is_some());
    }

    #[tokio::test]
    async fn connecting_to_a_missing_socket_names_the_socket_file() {
        let dir = tempfile::tempdir().unwrap();
        let url = socket(&format!(
            "postgres://u@/x?host={}&port=5999",
            dir.path().display()
        ));
        let upstream = Upstream::new(url, Duration::from_secs(1)).unwrap();
        let e = upstream.connect().await.unwrap_err().to_string();
        assert!(e.contains(".s.PGSQL.5999"), "{e}");
    }

    #[tokio::test]
    async fn a_socket_carries_bytes_both_ways() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::UnixListener::bind(dir.path().join(".s.PGSQL.5433")).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
        });
        let url = socket(&format!(
            "postgres://u@/x?host={}&port=5433&sslmode=require",
            dir.path().display()
        ));
        let upstream = Upstream::new(url, Duration::from_secs(5)).unwrap();
        let stream = upstream.connect().await.unwrap();
        assert!(matches!(stream, MaybeTls::Unix(_)));
        let (mut rd, mut wr) = stream.into_split();
        wr.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        rd.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");
        server.await.unwrap();
    }
}
