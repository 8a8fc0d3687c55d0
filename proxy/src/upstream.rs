//! The upstream PostgreSQL server: its URL, and opening connections to it
//! (TCP, then TLS as the URL's `sslmode` asks).
//!
//! Clients authenticate with their own credentials: the URL's user and
//! password serve only the proxy's own catalog connection, and never appear
//! in a log ([`UpstreamUrl`]'s `Display` hides the password).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::stream::MaybeTls;
use crate::tls::{self, Verification};

/// A connection to the upstream, plain or TLS.
pub type UpstreamStream = MaybeTls<tokio_rustls::client::TlsStream<TcpStream>>;

/// Problems with `--upstream` or with reaching it.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The URL does not parse or asks for something unsupported.
    #[error("invalid upstream URL: {0}")]
    Url(String),
    /// TLS configuration for the upstream failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// TCP connect failed or timed out.
    #[error("cannot connect to upstream {addr}: {reason}")]
    Connect {
        /// host:port tried.
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

/// The `sslmode` values libpq knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// Plain first; treated as plain (the proxy does not retry with TLS).
    Allow,
    /// TLS if the server offers it, unverified.
    Prefer,
    /// TLS or fail; unverified unless `sslrootcert` is given.
    Require,
    /// TLS, chain verified against `sslrootcert`.
    VerifyCa,
    /// TLS, chain and host name verified.
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<Self, UpstreamError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => return Err(UpstreamError::Url(format!("unknown sslmode '{other}'"))),
        })
    }
}

/// A parsed `--upstream` URL.
#[derive(Clone)]
pub struct UpstreamUrl {
    /// Host name or IP address.
    pub host: String,
    /// TCP port (default 5432).
    pub port: u16,
    /// User for the proxy's own connections (catalog).
    pub user: Option<String>,
    /// Password for the proxy's own connections; never printed.
    pub password: Option<String>,
    /// Database for the proxy's own connections.
    pub database: Option<String>,
    /// TLS toward the upstream.
    pub sslmode: SslMode,
    /// CA certificate for verify-ca / verify-full.
    pub sslrootcert: Option<PathBuf>,
}

impl fmt::Debug for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UpstreamUrl({self})")
    }
}

impl fmt::Display for UpstreamUrl {
    /// The URL with the password replaced, safe for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "postgres://")?;
        if let Some(user) = &self.user {
            write!(f, "{user}")?;
            if self.password.is_some() {
                write!(f, ":***")?;
            }
            write!(f, "@")?;
        }
        write!(f, "{}:{}", self.host, self.port)?;
        if let Some(db) = &self.database {
            write!(f, "/{db}")?;
        }
        Ok(())
    }
}

impl UpstreamUrl {
    /// Parses `postgres://[user[:pw]@]host[:port][/db][?sslmode=..&sslrootcert=..&password=..]`
    /// (`postgresql://` too). Percent-encoded parts are decoded. Errors
    /// never quote the URL, which may hold a password.
    pub fn parse(input: &str) -> Result<Self, UpstreamError> {
        let url = url::Url::parse(input).map_err(|e| UpstreamError::Url(e.to_string()))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(UpstreamError::Url(format!(
                "scheme must be postgres:// or postgresql://, not {}://",
                url.scheme()
            )));
        }
        let decode = |s: &str| {
            percent_decode(s).map_err(|_| UpstreamError::Url("bad percent-encoding".into()))
        };
        let mut host = url
            .host_str()
            .map(|h| decode(h.trim_start_matches('[').trim_end_matches(']')))
            .transpose()?
            .unwrap_or_default();
        let mut port = url.port().unwrap_or(5432);
        let user = (!url.username().is_empty())
            .then(|| decode(url.username()))
            .transpose()?;
        let mut password = url.password().map(decode).transpose()?;
        let database = url
            .path()
            .strip_prefix('/')
            .filter(|p| !p.is_empty())
            .map(decode)
            .transpose()?;
        let mut sslmode = SslMode::Prefer;
        let mut sslrootcert = None;
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "sslmode" => sslmode = SslMode::parse(&v)?,
                "sslrootcert" => sslrootcert = Some(PathBuf::from(v.as_ref())),
                // libpq's spelling; like libpq, it wins over the user info.
                "password" => password = Some(v.into_owned()),
                "host" => host = v.into_owned(),
                "port" => {
                    port = v
                        .parse()
                        .map_err(|_| UpstreamError::Url(format!("bad port '{v}'")))?
                }
                // Options for other tools (application_name, connect_timeout,
                // ...) are accepted and ignored.
                _ => {}
            }
        }
        if host.is_empty() {
            return Err(UpstreamError::Url("no host".into()));
        }
        if host.starts_with('/') {
            return Err(UpstreamError::Url(
                "Unix-domain socket upstreams are not supported; use a TCP host".into(),
            ));
        }
        if sslmode == SslMode::Require && sslrootcert.is_some() {
            // libpq: require with a root certificate behaves like verify-ca.
            sslmode = SslMode::VerifyCa;
        }
        Ok(UpstreamUrl {
            host,
            port,
            user,
            password,
            database,
            sslmode,
            sslrootcert,
        })
    }

    /// A tokio-postgres configuration for the proxy's own connections to
    /// this server (catalog, the findings store): its host, port and
    /// credentials, `database` (the URL's own when `None`), and TLS as its
    /// `sslmode` says (the TLS connector comes from [`Upstream::tls_config`]).
    pub fn client_config(
        &self,
        database: Option<&str>,
        application_name: &str,
    ) -> tokio_postgres::Config {
        use tokio_postgres::config::SslMode as PgSslMode;
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host)
            .port(self.port)
            // Without a user in the URL there is no better guess than the
            // superuser's conventional name; say so in the README.
            .user(self.user.as_deref().unwrap_or("postgres"))
            .application_name(application_name)
            .connect_timeout(Duration::from_secs(5))
            .ssl_mode(match self.sslmode {
                SslMode::Disable | SslMode::Allow => PgSslMode::Disable,
                SslMode::Prefer => PgSslMode::Prefer,
                _ => PgSslMode::Require,
            });
        if let Some(db) = database.or(self.database.as_deref()) {
            c.dbname(db);
        }
        if let Some(pw) = &self.password {
            c.password(pw);
        }
        c
    }

    /// `host:port`, for messages.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn percent_decode(s: &str) -> Result<String, std::str::Utf8Error> {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).map_err(|e| e.utf8_error())
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

    /// Connects and negotiates TLS per `sslmode`. The returned stream is
    /// ready for a StartupMessage or CancelRequest.
    pub async fn connect(&self) -> Result<UpstreamStream, UpstreamError> {
        let addr = self.url.addr();
        let connect_err = |reason: String| UpstreamError::Connect {
            addr: addr.clone(),
            reason,
        };
        let mut tcp = tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect((self.url.host.as_str(), self.url.port)),
        )
        .await
        .map_err(|_| connect_err(format!("timed out after {:?}", self.connect_timeout)))?
        .map_err(|e| connect_err(e.to_string()))?;
        tcp.set_nodelay(true).ok();
        let Some(connector) = &self.tls else {
            return Ok(MaybeTls::Plain(tcp));
        };
        let mut request = [0u8; 8];
        request[..4].copy_from_slice(&8u32.to_be_bytes());
        request[4..].copy_from_slice(&crate::protocol::startup::SSL_REQUEST_CODE.to_be_bytes());
        tcp.write_all(&request)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        match answer[0] {
            b'S' => {
                let name = ServerName::try_from(self.url.host.clone())
                    .map_err(|e| UpstreamError::Url(format!("bad host name: {e}")))?;
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

/// Shared handle used by every session.
pub type SharedUpstream = Arc<Upstream>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_url_and_hides_password() {
        let u = UpstreamUrl::parse(
            "postgres://app%40corp:s%3Acret@db.internal:6543/shop?sslmode=verify-full&sslrootcert=/etc/ca.pem",
        )
        .unwrap();
        assert_eq!(u.user.as_deref(), Some("app@corp"));
        assert_eq!(u.password.as_deref(), Some("s:cret"));
        assert_eq!(u.host, "db.internal");
        assert_eq!(u.port, 6543);
        assert_eq!(u.database.as_deref(), Some("shop"));
        assert_eq!(u.sslmode, SslMode::VerifyFull);
        let shown = format!("{u} {u:?}");
        assert!(
            !shown.contains("s:cret") && !shown.contains("s%3Acret"),
            "{shown}"
        );
        assert!(shown.contains("app@corp:***@db.internal:6543/shop"));
    }

    #[test]
    fn defaults_and_errors() {
        let u = UpstreamUrl::parse("postgresql://localhost").unwrap();
        assert_eq!(
            (u.port, u.sslmode, u.user.is_none()),
            (5432, SslMode::Prefer, true)
        );
        assert_eq!(
            UpstreamUrl::parse("postgres://h/db?sslmode=require&sslrootcert=ca.pem")
                .unwrap()
                .sslmode,
            SslMode::VerifyCa
        );
        assert!(UpstreamUrl::parse("mysql://h").is_err());
        assert!(UpstreamUrl::parse("postgres://h?sslmode=bogus").is_err());
        assert!(UpstreamUrl::parse("postgres://%2Ftmp/db").is_err());
        assert_eq!(
            UpstreamUrl::parse("postgres://[::1]:5/x").unwrap().addr(),
            "[::1]:5"
        );
    }

    #[test]
    fn percent_decoding_leaves_stray_percent() {
        assert_eq!(percent_decode("a%2").unwrap(), "a%2");
        assert_eq!(percent_decode("100%25").unwrap(), "100%");
    }
}
