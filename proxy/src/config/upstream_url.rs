//! A parsed upstream URL: `postgres://` with libpq's options, or a
//! Unix-domain socket directory as libpq reads it. A pure value, shared by
//! `--upstream` and a PostgreSQL `--store`; opening connections with it is
//! `net::upstream`'s job.
//!
//! The URL's password never appears in a log or error: [`UpstreamUrl`]'s
//! `Display` hides it and [`UrlError`] never quotes the URL.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why an upstream (or store) URL cannot be used. The message never
/// repeats the URL, which may hold a password.
#[derive(Debug, thiserror::Error)]
#[error("invalid upstream URL: {0}")]
pub struct UrlError(String);

impl UrlError {
    /// An error saying `reason`, which must not quote the URL.
    pub(crate) fn new(reason: impl Into<String>) -> UrlError {
        UrlError(reason.into())
    }
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
    fn parse(s: &str) -> Result<Self, UrlError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => return Err(UrlError(format!("unknown sslmode '{other}'"))),
        })
    }
}

/// Longest socket file path a Unix-domain socket address holds
/// (`sun_path` is 108 bytes on Linux, one of them the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Where the upstream listens, as the URL's host says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A host name or IP address, and a TCP port.
    Tcp {
        /// Host name or IP address.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// A Unix-domain socket file, `<dir>/.s.PGSQL.<port>`: the host was a
    /// directory (libpq's rule: it starts with `/`).
    Unix(PathBuf),
}

/// A parsed `--upstream` URL.
#[derive(Clone)]
pub struct UpstreamUrl {
    /// Host name or IP address; or, when it starts with `/`, the directory
    /// holding the server's Unix-domain socket (see [`UpstreamUrl::endpoint`]).
    pub host: String,
    /// TCP port (default 5432); for a socket, the number in its file name.
    pub port: u16,
    /// User for the proxy's own connections (catalog).
    pub user: Option<String>,
    /// Password for the proxy's own connections; never printed.
    pub password: Option<String>,
    /// Database for the proxy's own connections.
    pub database: Option<String>,
    /// TLS toward the upstream (ignored for a Unix-domain socket, as libpq
    /// ignores it there).
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
        if self.is_socket() {
            // libpq's own spelling of a socket directory.
            write!(f, "/{}", self.database.as_deref().unwrap_or(""))?;
            return write!(f, "?host={}&port={}", self.host, self.port);
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
    /// (`postgresql://` too). Percent-encoded parts are decoded. As in
    /// libpq, a host that starts with `/` is the directory of the server's
    /// Unix-domain socket, given in the query (`postgres://user@/db?host=/var/run/postgresql&port=5432`)
    /// or percent-encoded in the authority (`postgres://%2Fvar%2Frun%2Fpostgresql/db`).
    /// Errors never quote the URL, which may hold a password.
    pub fn parse(input: &str) -> Result<Self, UrlError> {
        let stand_in = with_stand_in_host(input);
        let url = url::Url::parse(stand_in.as_deref().unwrap_or(input))
            .map_err(|e| UrlError(e.to_string()))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(UrlError(format!(
                "scheme must be postgres:// or postgresql://, not {}://",
                url.scheme()
            )));
        }
        let decode =
            |s: &str| percent_decode(s).map_err(|_| UrlError("bad percent-encoding".into()));
        let mut host = url
            .host_str()
            .filter(|_| stand_in.is_none())
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
                "port" => port = v.parse().map_err(|_| UrlError(format!("bad port '{v}'")))?,
                // Options for other tools (application_name, connect_timeout,
                // ...) are accepted and ignored.
                _ => {}
            }
        }
        if host.is_empty() {
            return Err(UrlError(
                "no host (for a Unix-domain socket, give its directory: ?host=/var/run/postgresql)"
                    .into(),
            ));
        }
        if host.starts_with('@') {
            return Err(UrlError(
                "abstract Unix-domain sockets (a host starting with '@') are not supported".into(),
            ));
        }
        if host.contains(',') {
            return Err(UrlError("several hosts are not supported; give one".into()));
        }
        if sslmode == SslMode::Require && sslrootcert.is_some() {
            // libpq: require with a root certificate behaves like verify-ca.
            sslmode = SslMode::VerifyCa;
        }
        let url = UpstreamUrl {
            host,
            port,
            user,
            password,
            database,
            sslmode,
            sslrootcert,
        };
        if let Endpoint::Unix(path) = url.endpoint() {
            // Checked here rather than at the first connect, so a typo
            // stops the proxy at start instead of failing every client.
            let len = path.as_os_str().len();
            if len > MAX_SOCKET_PATH {
                return Err(UrlError(format!(
                    "the Unix-domain socket path {} is {len} bytes long; at most {MAX_SOCKET_PATH} fit",
                    path.display()
                )));
            }
        }
        Ok(url)
    }

    /// A tokio-postgres configuration for the proxy's own connections to
    /// this server (catalog, the findings store): its host (or socket
    /// directory), port and credentials, `database` (the URL's own when
    /// `None`), and TLS as its `sslmode` says (the TLS connector comes from
    /// `net::upstream::Upstream::tls_config`).
    pub fn client_config(
        &self,
        database: Option<&str>,
        application_name: &str,
    ) -> tokio_postgres::Config {
        use tokio_postgres::config::SslMode as PgSslMode;
        let mut c = tokio_postgres::Config::new();
        if self.is_socket() {
            // tokio-postgres finds `.s.PGSQL.<port>` in the directory, as
            // libpq does; like libpq it never uses TLS there.
            c.host_path(&self.host).ssl_mode(PgSslMode::Disable);
        } else {
            c.host(&self.host).ssl_mode(match self.sslmode {
                SslMode::Disable | SslMode::Allow => PgSslMode::Disable,
                SslMode::Prefer => PgSslMode::Prefer,
                _ => PgSslMode::Require,
            });
        }
        c.port(self.port)
            // Without a user in the URL there is no better guess than the
            // superuser's conventional name; say so in the README.
            .user(self.user.as_deref().unwrap_or("postgres"))
            .application_name(application_name)
            .connect_timeout(Duration::from_secs(5));
        if let Some(db) = database.or(self.database.as_deref()) {
            c.dbname(db);
        }
        if let Some(pw) = &self.password {
            c.password(pw);
        }
        c
    }

    /// Whether the host names a Unix-domain socket directory.
    pub fn is_socket(&self) -> bool {
        self.host.starts_with('/')
    }

    /// Where to connect: TCP, or the socket file in the host directory.
    pub fn endpoint(&self) -> Endpoint {
        if self.is_socket() {
            Endpoint::Unix(Path::new(&self.host).join(format!(".s.PGSQL.{}", self.port)))
        } else {
            Endpoint::Tcp {
                host: self.host.clone(),
                port: self.port,
            }
        }
    }

    /// `host:port` (or the socket file), for messages.
    pub fn addr(&self) -> String {
        match self.endpoint() {
            Endpoint::Unix(path) => path.display().to_string(),
            Endpoint::Tcp { host, port } if host.contains(':') => format!("[{host}]:{port}"),
            Endpoint::Tcp { host, port } => format!("{host}:{port}"),
        }
    }
}

/// The url crate refuses an empty host after user info or before a port
/// (`postgres://user@/db`, `postgres://:5433/db`), which libpq reads as "no
/// host here" (the socket form gives it in the query). Such a URL is parsed
/// with a stand-in host, which [`UpstreamUrl::parse`] then drops.
fn with_stand_in_host(input: &str) -> Option<String> {
    let (scheme, rest) = input.split_once("://")?;
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let host_at = authority.rfind('@').map_or(0, |at| at + 1);
    let host_and_port = &authority[host_at..];
    let empty_after_user = host_and_port.is_empty() && host_at > 0;
    if !empty_after_user && !host_and_port.starts_with(':') {
        return None;
    }
    let at = scheme.len() + 3 + host_at;
    Some(format!("{}stand-in{}", &input[..at], &input[at..]))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(url: &str) -> UpstreamUrl {
        UpstreamUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

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
        assert_eq!(
            UpstreamUrl::parse("postgres://[::1]:5/x").unwrap().addr(),
            "[::1]:5"
        );
    }

    #[test]
    fn a_host_that_is_a_directory_is_a_unix_socket() {
        for url in [
            "postgres://app@/shop?host=/var/run/postgresql&port=6000",
            "postgresql://app@/shop?host=%2Fvar%2Frun%2Fpostgresql&port=6000",
            "postgres://app@%2Fvar%2Frun%2Fpostgresql:6000/shop",
            "postgres://app@ignored.example:1/shop?host=/var/run/postgresql&port=6000",
        ] {
            let u = socket(url);
            assert!(u.is_socket(), "{url}");
            assert_eq!(u.host, "/var/run/postgresql", "{url}");
            assert_eq!(
                u.endpoint(),
                Endpoint::Unix(PathBuf::from("/var/run/postgresql/.s.PGSQL.6000")),
                "{url}"
            );
            assert_eq!(
                (u.user.as_deref(), u.database.as_deref()),
                (Some("app"), Some("shop")),
                "{url}"
            );
            assert_eq!(u.addr(), "/var/run/postgresql/.s.PGSQL.6000");
        }
        // An empty host before a port, as libpq allows.
        let u = socket("postgres://:6001/shop?host=/var/run/postgresql");
        assert_eq!(
            u.endpoint(),
            Endpoint::Unix(PathBuf::from("/var/run/postgresql/.s.PGSQL.6001"))
        );
        // The authority form with no user, and the default port.
        let u = socket("postgres://%2Fvar%2Frun%2Fpostgresql/db");
        assert_eq!(
            u.endpoint(),
            Endpoint::Unix(PathBuf::from("/var/run/postgresql/.s.PGSQL.5432"))
        );
        assert_eq!(u.user, None);
        // Logs show libpq's spelling, never the password.
        let u = socket("postgres://app:pw@/shop?host=/tmp&port=7");
        assert_eq!(u.to_string(), "postgres://app:***@/shop?host=/tmp&port=7");
        // A TCP host stays TCP.
        assert_eq!(
            socket("postgres://db.internal:6543/x").endpoint(),
            Endpoint::Tcp {
                host: "db.internal".into(),
                port: 6543
            }
        );
        assert_eq!(
            socket("postgres://u@/x?host=localhost").endpoint(),
            Endpoint::Tcp {
                host: "localhost".into(),
                port: 5432
            }
        );
    }

    #[test]
    fn socket_url_errors() {
        let error = |url: &str| match UpstreamUrl::parse(url) {
            Err(UrlError(m)) => m,
            other => panic!("{url}: {other:?}"),
        };
        assert!(error("postgres://u@/db").contains("?host=/var/run/postgresql"));
        assert!(error("postgres://u@/db?host=").contains("no host"));
        assert!(error("postgres://u@/db?host=/tmp&port=x").contains("bad port"));
        assert!(error("postgres://u@/db?host=/tmp&port=70000").contains("bad port"));
        assert!(error("postgres://u@/db?host=@abstract").contains("abstract"));
        assert!(error("postgres://u@/db?host=/a,/b").contains("several hosts"));
        let long = format!("postgres://u@/db?host=/{}", "d".repeat(100));
        assert!(error(&long).contains("at most 107"), "{}", error(&long));
    }

    #[test]
    fn percent_decoding_leaves_stray_percent() {
        assert_eq!(percent_decode("a%2").unwrap(), "a%2");
        assert_eq!(percent_decode("100%25").unwrap(), "100%");
    }
}
