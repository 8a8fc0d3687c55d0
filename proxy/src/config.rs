//! `qproxy serve` configuration: one struct read from flags, `QPROXY_*`
//! environment variables and a TOML file, merged as flags > env > file >
//! defaults.
//!
//! clap resolves flags over env; every field is optional there, so a value
//! missing from both is taken from the `--config` file, then from the
//! defaults below. The file uses the same names as the flags, with
//! underscores (`admin_listen = "127.0.0.1:9930"`).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use qproxy_analyzer::report::TraceUrl;
use qproxy_analyzer::store::{period, WriterConfig};

use crate::analysis::store_target::{StoreArg, StoreTarget, StoreTargetError};
use crate::analysis::AnalysisSettings;
use crate::net::upstream::{UpstreamError, UpstreamUrl};
use crate::tracker::TrackerLimits;

/// Default client listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:6432";
/// Default admin HTTP address.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9930";
/// Default findings store.
pub const DEFAULT_STORE: &str = ".qproxy/findings.db";

/// Problems with the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for these keys.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A required setting is missing or settings contradict each other.
    #[error("{0}")]
    Invalid(String),
    /// The upstream URL is wrong (the message never repeats the URL, which
    /// may hold a password).
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// `--store` or `--store-schema` is wrong.
    #[error(transparent)]
    Store(#[from] StoreTargetError),
    /// The upstream password file could not be read.
    #[error("cannot read the upstream password file {path}: {source}")]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The environment variable that may hold the upstream password, so that it
/// is not on the command line, where `ps` shows it to every user.
pub const UPSTREAM_PASSWORD_ENV: &str = "QPROXY_UPSTREAM_PASSWORD";

/// The `--upstream` value as given. A type of its own so that no `Debug`
/// (of the arguments, of a configuration) can print its password, and so
/// that clap never rejects it (its error would quote the value): it is
/// parsed, with errors that do not repeat it, when the configuration is
/// resolved.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct UpstreamArg(pub String);

impl fmt::Debug for UpstreamArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match UpstreamUrl::parse(&self.0) {
            Ok(url) => write!(f, "UpstreamArg({url})"),
            Err(_) => f.write_str("UpstreamArg(<not a valid URL>)"),
        }
    }
}

impl FromStr for UpstreamArg {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(UpstreamArg(s.to_string()))
    }
}

impl From<String> for UpstreamArg {
    fn from(s: String) -> Self {
        UpstreamArg(s)
    }
}

impl From<&str> for UpstreamArg {
    fn from(s: &str) -> Self {
        UpstreamArg(s.to_string())
    }
}

/// Where the upstream password came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordSource {
    /// The `--upstream` URL (on the command line it is visible to `ps`).
    Url,
    /// [`UPSTREAM_PASSWORD_ENV`].
    Env,
    /// `--upstream-password-file`.
    File,
    /// `PGPASSWORD`, libpq's variable, used when nothing else gives one.
    PgPassword,
}

impl PasswordSource {
    fn describe(self) -> &'static str {
        match self {
            PasswordSource::Url => "in the upstream URL",
            PasswordSource::Env => UPSTREAM_PASSWORD_ENV,
            PasswordSource::File => "--upstream-password-file",
            PasswordSource::PgPassword => "PGPASSWORD",
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// JSON lines when stderr is not a terminal, text otherwise.
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

/// The settings of `qproxy serve`, as flags, env vars and TOML keys.
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// Address clients connect to [default: 127.0.0.1:6432]
    #[arg(long, env = "QPROXY_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// The PostgreSQL server: postgres://[user[:pw]@]host[:port][/db][?sslmode=..&sslrootcert=..],
    /// or a Unix-domain socket: postgres://[user@]/db?host=/var/run/postgresql[&port=5432].
    /// Its credentials serve the proxy's catalog connection only; clients
    /// authenticate with their own.
    /// Keep the password out of it on the command line (`ps` shows it):
    /// use QPROXY_UPSTREAM_PASSWORD or --upstream-password-file.
    #[arg(
        long,
        env = "QPROXY_UPSTREAM",
        value_name = "URL",
        hide_env_values = true
    )]
    pub upstream: Option<UpstreamArg>,
    /// File whose first line is the password for the --upstream user (a
    /// mounted secret); the password may also come from the
    /// QPROXY_UPSTREAM_PASSWORD environment variable, or else PGPASSWORD
    #[arg(long, env = "QPROXY_UPSTREAM_PASSWORD_FILE", value_name = "PATH")]
    pub upstream_password_file: Option<PathBuf>,
    /// Address of the admin HTTP server (/metrics, /healthz, /readyz) [default: 127.0.0.1:9930]
    #[arg(long, env = "QPROXY_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// Findings store: a SQLite file, or a postgres://[user[:pw]@]host[:port]/db[?sslmode=..]
    /// URL that many proxies share (TLS per sslmode, as for --upstream)
    /// [default: .qproxy/findings.db]
    // hide_env_values: --help would print the URL, password and all.
    #[arg(
        long,
        env = "QPROXY_STORE",
        value_name = "PATH|URL",
        hide_env_values = true
    )]
    pub store: Option<StoreArg>,
    /// Schema of a PostgreSQL findings store; created and migrated on
    /// start [default: qproxy]
    #[arg(long, env = "QPROXY_STORE_SCHEMA", value_name = "NAME")]
    pub store_schema: Option<String>,
    /// Delete runs last active longer ago than this (with the findings only
    /// they saw) from the store, at startup and hourly: 30d, 12h, 1d12h
    /// [default: keep everything]
    #[arg(long, env = "QPROXY_STORE_RETENTION", value_name = "DURATION")]
    pub store_retention: Option<String>,
    /// This proxy's name in the store, recorded with its run (`qproxy
    /// report --instance` selects by it) [default: <host name>:<listen address>]
    #[arg(long, env = "QPROXY_INSTANCE", value_name = "NAME")]
    pub instance: Option<String>,
    /// PEM certificate chain for TLS toward clients (with --tls-key)
    #[arg(long, env = "QPROXY_TLS_CERT", value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS toward clients (with --tls-cert)
    #[arg(long, env = "QPROXY_TLS_KEY", value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
    /// TOML file with any of these settings (flags and env win over it)
    #[arg(long, env = "QPROXY_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Seconds sessions get to finish after SIGTERM/SIGINT [default: 30]
    #[arg(long, env = "QPROXY_SHUTDOWN_GRACE", value_name = "SECONDS")]
    pub shutdown_grace: Option<f64>,
    /// Seconds a client has to send its StartupMessage and to finish
    /// authenticating [default: 15]
    #[arg(long, env = "QPROXY_STARTUP_TIMEOUT", value_name = "SECONDS")]
    pub startup_timeout: Option<f64>,
    /// Seconds to wait for the upstream's TCP connect and TLS handshake [default: 5]
    #[arg(long, env = "QPROXY_CONNECT_TIMEOUT", value_name = "SECONDS")]
    pub connect_timeout: Option<f64>,
    /// Most client connections at once; more are refused with 53300 [default: 10000]
    #[arg(long, env = "QPROXY_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Most connections still in startup (connected, not yet past
    /// authentication) at once, so sockets that connect and stall cannot
    /// take every connection: when all are taken, a new connection replaces
    /// the one starting up longest if that one has been at it for a second,
    /// else it is refused with 53300 [default: max_connections / 4, at least 1]
    #[arg(long, env = "QPROXY_MAX_STARTUP_CONNECTIONS", value_name = "N")]
    pub max_startup_connections: Option<usize>,
    /// Largest message the proxy holds whole to analyse it (Query, Parse,
    /// Bind, ...); larger client messages are refused with 08P01, larger
    /// server messages (a huge error text) stream through unanalysed.
    /// Results and COPY data stream through whatever their size [default: 67108864]
    #[arg(long, env = "QPROXY_MAX_MESSAGE_BYTES", value_name = "BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Memory all sessions together may use to hold large messages whole
    /// (and the analyzer's copies of large SQL texts). A message the budget
    /// cannot cover is forwarded as it arrives, without being held, and is
    /// not analysed (counted in qproxy_statements_not_analysed_total); the
    /// client notices nothing [default: 268435456]
    #[arg(long, env = "QPROXY_MAX_HELD_BYTES", value_name = "BYTES")]
    pub max_held_bytes: Option<usize>,
    /// Statements of one simple Query that are analysed; the rest are
    /// forwarded as usual and counted as not analysed (1 to 65535) [default: 1000]
    #[arg(long, env = "QPROXY_MAX_STATEMENTS_PER_MESSAGE", value_name = "N")]
    pub max_statements_per_message: Option<usize>,
    /// Capacity of the queue from the relay to the analyzer; when full,
    /// events are dropped and counted, never waited for [default: 65536]
    #[arg(long, env = "QPROXY_EVENT_QUEUE", value_name = "N")]
    pub event_queue: Option<usize>,
    /// Threads forwarding traffic; each session stays on one [default:
    /// half the CPUs, at least 1]
    #[arg(long, env = "QPROXY_WORKERS", value_name = "N")]
    pub workers: Option<usize>,
    /// Log format [default: auto]
    #[arg(long, env = "QPROXY_LOG_FORMAT", value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Seconds between flushes of findings to the store; a crash loses at
    /// most this much [default: 1]
    #[arg(long, env = "QPROXY_FLUSH_INTERVAL", value_name = "SECONDS")]
    pub flush_interval: Option<f64>,
    /// Distinct parameter tuples of one SELECT in one request that make an
    /// N+1 [default: 5]
    #[arg(long, env = "QPROXY_N_PLUS_ONE_THRESHOLD", value_name = "N")]
    pub n_plus_one_threshold: Option<u32>,
    /// Single-row executions of one INSERT/UPDATE/DELETE in one request,
    /// each its own round trip, that make an N+1 write [default: 5]
    #[arg(long, env = "QPROXY_N_PLUS_ONE_WRITE_THRESHOLD", value_name = "N")]
    pub n_plus_one_write_threshold: Option<u32>,
    /// p95 latency in milliseconds from which a query is slow (one
    /// execution of 1 s or more is reported on its own) [default: 100]
    #[arg(long, env = "QPROXY_SLOW_QUERY_MS", value_name = "MS")]
    pub slow_query_ms: Option<u64>,
    /// Statements one request may run before it is reported as too many
    /// queries (transaction control and SET/SHOW not counted) [default: 50]
    #[arg(long, env = "QPROXY_QUERY_BUDGET", value_name = "N")]
    pub query_budget: Option<u64>,
    /// Milliseconds a transaction may sit idle (the application sending
    /// nothing) before it is reported [default: 1000]
    #[arg(long, env = "QPROXY_IDLE_IN_TRANSACTION_MS", value_name = "MS")]
    pub idle_in_transaction_ms: Option<u64>,
    /// Tables with fewer estimated rows are never reported as unindexed
    /// [default: 10000]
    #[arg(long, env = "QPROXY_UNINDEXED_MIN_ROWS", value_name = "ROWS")]
    pub unindexed_min_rows: Option<u64>,
    /// An OFFSET of at least this many rows on a large table is reported as
    /// offset pagination [default: 1000]
    #[arg(long, env = "QPROXY_OFFSET_PAGINATION_MIN_OFFSET", value_name = "ROWS")]
    pub offset_pagination_min_offset: Option<u64>,
    /// Fingerprints (and routes) that get their own metrics series: the
    /// first N distinct ones seen; later ones are counted under
    /// `fingerprint="other"` (`route="other"`) [default: 100]
    #[arg(long, env = "QPROXY_METRICS_TOP_K", value_name = "N")]
    pub metrics_top_k: Option<usize>,
    /// Link trace ids to a trace viewer: a URL with {trace_id} where the
    /// id goes (e.g. https://tempo.example/trace/{trace_id}); the same
    /// setting as `qproxy report --trace-url`
    #[arg(long, env = "QPROXY_TRACE_URL", value_name = "URL")]
    pub trace_url: Option<String>,
    /// Advanced: distinct findings held in memory while the findings store
    /// cannot be written (locked by another process, disk full); deltas of
    /// further findings are dropped and counted in
    /// qproxy_findings_lost_total and the report [default: 100000]
    #[arg(long, env = "QPROXY_STORE_PENDING_MAX", value_name = "N", hide = true)]
    pub store_pending_max: Option<usize>,
    /// Every analyzer setting, TOML only: `[analyzer.n_plus_one]`,
    /// `[analyzer.unbounded]`, `[analyzer.unindexed]`,
    /// `[analyzer.slow_query]`, `[analyzer.too_many_queries]`,
    /// `[analyzer.idle_in_transaction]`, `[analyzer.offset_pagination]`,
    /// `[analyzer.correlation]` (see
    /// qproxy.example.toml).
    #[arg(skip)]
    pub analyzer: Option<qproxy_analyzer::pipeline::AnalyzerConfig>,
}

/// The resolved configuration the server runs with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Client listen address.
    pub listen: SocketAddr,
    /// The upstream, with the password from wherever it was given.
    pub upstream: UpstreamUrl,
    /// Where the upstream password came from, if there is one.
    pub upstream_password_source: Option<PasswordSource>,
    /// Admin HTTP address.
    pub admin_listen: SocketAddr,
    /// Findings store: a file or a PostgreSQL schema.
    pub store: StoreTarget,
    /// This proxy's instance name, recorded with its run.
    pub instance: String,
    /// How the store's writer thread holds and retries findings while the
    /// store cannot be written.
    pub store_writer: WriterConfig,
    /// TLS toward clients: certificate and key.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Drain grace period.
    pub shutdown_grace: Duration,
    /// Startup and authentication time limit.
    pub startup_timeout: Duration,
    /// Upstream connect time limit.
    pub connect_timeout: Duration,
    /// Connection cap.
    pub max_connections: usize,
    /// Cap on connections still in startup.
    pub max_startup_connections: usize,
    /// Cap on messages held whole.
    pub max_message_bytes: usize,
    /// Budget for bytes held whole, all sessions together.
    pub max_held_bytes: usize,
    /// Analyzer queue capacity.
    pub event_queue: usize,
    /// Forwarding threads.
    pub workers: usize,
    /// Log format.
    pub log_format: LogFormat,
    /// Fingerprints (and routes) with their own metrics series.
    pub metrics_top_k: usize,
    /// Where trace ids link to (`--trace-url`); see
    /// [`ServeConfig::trace_link`].
    pub trace_url: Option<TraceUrl>,
    /// Per-connection tracker caps.
    pub tracker_limits: TrackerLimits,
    /// The analysis task's settings.
    pub analysis: AnalysisSettings,
}

impl ServeConfig {
    /// The link to a trace in the configured trace viewer, or `None`
    /// without `--trace-url`: for anything that shows a finding's or a
    /// request's trace id (the live view).
    pub fn trace_link(&self, trace_id: &str) -> Option<String> {
        self.trace_url.as_ref().map(|url| url.link(trace_id))
    }
}

impl ServeArgs {
    /// Reads a TOML config file with the same keys.
    pub fn from_file(path: &Path) -> Result<ServeArgs, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Merges flags/env (`self`) over the `--config` file over defaults.
    pub fn resolve(self) -> Result<ServeConfig, ConfigError> {
        self.resolve_with_env(|name| std::env::var(name).ok())
    }

    /// [`resolve`](Self::resolve), reading the environment variables clap
    /// does not (the upstream password) through `env`.
    pub fn resolve_with_env(
        self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ServeConfig, ConfigError> {
        let file = match &self.config {
            Some(path) => ServeArgs::from_file(path)?,
            None => ServeArgs::default(),
        };
        macro_rules! pick {
            ($field:ident) => {
                self.$field.or(file.$field)
            };
        }
        let upstream = pick!(upstream).ok_or_else(|| {
            ConfigError::Invalid(
                "--upstream (or QPROXY_UPSTREAM, or `upstream` in the config file) is required"
                    .into(),
            )
        })?;
        let (upstream, upstream_password_source) =
            upstream_with_password(&upstream.0, pick!(upstream_password_file).as_deref(), &env)?;
        let tls = match (pick!(tls_cert), pick!(tls_key)) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid(
                    "--tls-cert and --tls-key must be given together".into(),
                ))
            }
        };
        let seconds = |v: Option<f64>, default: f64, name: &str| -> Result<Duration, ConfigError> {
            let s = v.unwrap_or(default);
            Duration::try_from_secs_f64(s).map_err(|_| {
                ConfigError::Invalid(format!("{name} must be a non-negative number of seconds"))
            })
        };
        let max_message_bytes = pick!(max_message_bytes).unwrap_or(64 << 20);
        if max_message_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "max_message_bytes must be at least 1024".into(),
            ));
        }
        let mut analysis = AnalysisSettings {
            analyzer: pick!(analyzer).unwrap_or_default(),
            flush_interval: seconds(pick!(flush_interval), 1.0, "flush_interval")?,
            ..AnalysisSettings::default()
        };
        let rate = analysis.analyzer.verification.connections_per_second;
        if !(rate.is_finite() && rate > 0.0) {
            return Err(ConfigError::Invalid(
                "analyzer.verification.connections_per_second must be a positive number".into(),
            ));
        }
        if let Some(n) = pick!(n_plus_one_threshold) {
            analysis.analyzer.n_plus_one.threshold = n.max(2);
        }
        if let Some(n) = pick!(n_plus_one_write_threshold) {
            analysis.analyzer.n_plus_one.write_threshold = n.max(2);
        }
        if let Some(ms) = pick!(slow_query_ms) {
            analysis.analyzer.slow_query.threshold = Duration::from_millis(ms.max(1));
        }
        if let Some(n) = pick!(query_budget) {
            analysis.analyzer.too_many_queries.budget = n.max(1);
        }
        if let Some(ms) = pick!(idle_in_transaction_ms) {
            analysis.analyzer.idle_in_transaction.threshold = Duration::from_millis(ms.max(1));
        }
        if let Some(rows) = pick!(unindexed_min_rows) {
            analysis.analyzer.unindexed.min_table_rows = rows;
        }
        let shutdown_grace = seconds(pick!(shutdown_grace), 30.0, "shutdown_grace")?;
        let store_writer = WriterConfig {
            pending_max: pick!(store_pending_max)
                .unwrap_or(WriterConfig::DEFAULT_PENDING_MAX)
                .max(1),
            // The final flush retries a locked store for the grace period,
            // but no longer than 10 s: orchestrators size their kill timeout
            // on the grace period, and the drain already used some of it.
            final_flush_timeout: shutdown_grace.min(WriterConfig::DEFAULT_FINAL_FLUSH_TIMEOUT),
            retention: pick!(store_retention).map(|r| retention(&r)).transpose()?,
            ..WriterConfig::default()
        };
        let store = pick!(store)
            .unwrap_or_else(|| StoreArg::from(DEFAULT_STORE))
            .target(pick!(store_schema).as_deref())?;
        if let Some(rows) = pick!(offset_pagination_min_offset) {
            analysis.analyzer.offset_pagination.min_offset = rows;
        }
        let max_statements_per_message = pick!(max_statements_per_message)
            .unwrap_or(qproxy_analyzer::pipeline::DEFAULT_MAX_STATEMENTS_PER_TEXT);
        // Statement indexes are 16-bit; the cap keeps every analysed one
        // distinct.
        if !(1..=usize::from(u16::MAX)).contains(&max_statements_per_message) {
            return Err(ConfigError::Invalid(
                "max_statements_per_message must be between 1 and 65535".into(),
            ));
        }
        analysis.analyzer.max_statements_per_text = max_statements_per_message;
        let tracker_limits = TrackerLimits {
            max_statements_per_message,
            ..TrackerLimits::default()
        };
        let trace_url = match pick!(trace_url) {
            Some(s) if !s.is_empty() => Some(
                s.parse::<TraceUrl>()
                    .map_err(|e| ConfigError::Invalid(e.to_string()))?,
            ),
            _ => None,
        };
        let max_connections = pick!(max_connections).unwrap_or(10_000).max(1);
        let max_startup_connections = pick!(max_startup_connections)
            .unwrap_or(max_connections / 4)
            .clamp(1, max_connections);
        let listen =
            pick!(listen).unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default"));
        let instance = match pick!(instance) {
            Some(name) => checked_instance(name)?,
            None => default_instance(&qproxy_analyzer::store::host_name(), listen),
        };
        Ok(ServeConfig {
            listen,
            upstream,
            upstream_password_source,
            admin_listen: pick!(admin_listen)
                .unwrap_or_else(|| DEFAULT_ADMIN_LISTEN.parse().expect("valid default")),
            store,
            instance,
            store_writer,
            tls,
            shutdown_grace,
            startup_timeout: seconds(pick!(startup_timeout), 15.0, "startup_timeout")?,
            connect_timeout: seconds(pick!(connect_timeout), 5.0, "connect_timeout")?,
            max_connections,
            max_startup_connections,
            max_message_bytes,
            max_held_bytes: pick!(max_held_bytes).unwrap_or(256 << 20),
            event_queue: pick!(event_queue).unwrap_or(65_536).max(1),
            workers: pick!(workers)
                .unwrap_or_else(crate::workers::default_workers)
                .clamp(1, 1024),
            log_format: pick!(log_format).unwrap_or(LogFormat::Auto),
            metrics_top_k: pick!(metrics_top_k).unwrap_or(crate::metrics::DEFAULT_TOP_K),
            trace_url,
            tracker_limits,
            analysis,
        })
    }
}

/// The instance name when `--instance` is not given: unique per proxy on
/// a host, and stable across restarts of the same sidecar.
pub fn default_instance(host: &str, listen: SocketAddr) -> String {
    format!("{host}:{listen}")
}

/// Longest `--instance` accepted: a name, not a document.
const MAX_INSTANCE_LEN: usize = 200;

fn checked_instance(name: String) -> Result<String, ConfigError> {
    let name = name.trim().to_string();
    if name.is_empty() || name.len() > MAX_INSTANCE_LEN || name.chars().any(char::is_control) {
        return Err(ConfigError::Invalid(format!(
            "instance must be 1 to {MAX_INSTANCE_LEN} printable characters"
        )));
    }
    Ok(name)
}

/// `store_retention`: a duration with a unit, more than zero.
fn retention(value: &str) -> Result<Duration, ConfigError> {
    match period::parse_duration(value) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(ConfigError::Invalid(
            "store_retention must be more than zero (leave it unset to keep everything)".into(),
        )),
        Err(e) => Err(ConfigError::Invalid(format!("store_retention: {e}"))),
    }
}

/// Parses the upstream URL and gives it its password: from the URL, from
/// [`UPSTREAM_PASSWORD_ENV`] or from the password file (at most one of
/// them), else from `PGPASSWORD`, as libpq would.
fn upstream_with_password(
    url: &str,
    password_file: Option<&Path>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(UpstreamUrl, Option<PasswordSource>), ConfigError> {
    let mut upstream = UpstreamUrl::parse(url)?;
    let from_file = password_file.map(read_password_file).transpose()?;
    let nonempty = |name: &str| env(name).filter(|p| !p.is_empty());
    let mut given: Vec<(PasswordSource, String)> = [
        (PasswordSource::Url, upstream.password.take()),
        (PasswordSource::Env, nonempty(UPSTREAM_PASSWORD_ENV)),
        (PasswordSource::File, from_file),
    ]
    .into_iter()
    .filter_map(|(source, password)| Some((source, password?)))
    .collect();
    if given.len() > 1 {
        let places: Vec<&str> = given.iter().map(|(source, _)| source.describe()).collect();
        return Err(ConfigError::Invalid(format!(
            "the upstream password is given more than once ({}); keep one",
            places.join(", ")
        )));
    }
    let found = given
        .pop()
        .or_else(|| Some((PasswordSource::PgPassword, nonempty("PGPASSWORD")?)));
    let source = found.map(|(source, password)| {
        upstream.password = Some(password);
        source
    });
    Ok((upstream, source))
}

/// The first line of a password file, without its line ending: the form
/// Docker and Kubernetes secrets are mounted in.
fn read_password_file(path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::PasswordFile {
        path: path.to_owned(),
        source,
    })?;
    match text.lines().next() {
        Some(line) if !line.is_empty() => Ok(line.to_string()),
        _ => Err(ConfigError::Invalid(format!(
            "the upstream password file {} is empty",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn flags_win_over_file_and_file_over_defaults() {
        let f = file(
            "upstream = \"postgres://file\"\nlisten = \"127.0.0.1:7000\"\nshutdown_grace = 2.5\n\
             [analyzer.n_plus_one]\nthreshold = 8\n[analyzer.unindexed]\nmin_table_rows = 500\n\
             [analyzer.offset_pagination]\nmin_offset = 200\nerror_offset = 5000\n",
        );
        let args = ServeArgs {
            listen: Some("127.0.0.1:8000".parse().unwrap()),
            config: Some(f.path().to_owned()),
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.listen.port(), 8000);
        assert_eq!(c.upstream.host, "file");
        assert_eq!(c.shutdown_grace, Duration::from_millis(2500));
        assert_eq!(c.store_writer.final_flush_timeout, c.shutdown_grace);
        assert_eq!(c.store_writer.pending_max, 100_000);
        assert_eq!(c.admin_listen.port(), 9930);
        assert_eq!(c.metrics_top_k, 100);
        assert!(
            matches!(&c.store, StoreTarget::Sqlite(p) if p == &PathBuf::from(".qproxy/findings.db"))
        );
        assert_eq!(c.store_writer.retention, None);
        assert_eq!(
            c.instance,
            default_instance(&qproxy_analyzer::store::host_name(), c.listen)
        );
        assert_eq!(c.analysis.analyzer.n_plus_one.threshold, 8);
        assert_eq!(c.analysis.analyzer.unindexed.min_table_rows, 500);
        assert_eq!(c.analysis.analyzer.n_plus_one.repeated_threshold, 3);
        let paging = &c.analysis.analyzer.offset_pagination;
        assert_eq!((paging.min_offset, paging.error_offset), (200, 5000));
        let flagged = ServeArgs {
            offset_pagination_min_offset: Some(50),
            config: Some(f.path().to_owned()),
            ..Default::default()
        };
        let c = flagged.resolve().unwrap();
        assert_eq!(c.analysis.analyzer.offset_pagination.min_offset, 50);
        assert_eq!(c.analysis.analyzer.offset_pagination.error_offset, 5000);
        assert_eq!(c.max_held_bytes, 256 << 20);
        assert_eq!(c.max_startup_connections, 2500);
        assert_eq!(c.tracker_limits.max_statements_per_message, 1000);
        assert_eq!(c.analysis.analyzer.max_statements_per_text, 1000);
    }

    #[test]
    fn limits_follow_each_other_and_are_checked() {
        let base = || ServeArgs {
            upstream: Some("postgres://h".into()),
            ..Default::default()
        };
        let c = ServeArgs {
            max_connections: Some(8),
            max_statements_per_message: Some(50),
            max_held_bytes: Some(1 << 20),
            ..base()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.max_startup_connections, 2);
        assert_eq!(c.tracker_limits.max_statements_per_message, 50);
        assert_eq!(c.analysis.analyzer.max_statements_per_text, 50);
        assert_eq!(c.max_held_bytes, 1 << 20);
        // Never more startup slots than connections, never none.
        let c = ServeArgs {
            max_connections: Some(3),
            max_startup_connections: Some(10),
            ..base()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.max_startup_connections, 3);
        let c = ServeArgs {
            max_connections: Some(2),
            ..base()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.max_startup_connections, 1);
        for bad in [0, 65_536] {
            let err = ServeArgs {
                max_statements_per_message: Some(bad),
                ..base()
            }
            .resolve()
            .unwrap_err()
            .to_string();
            assert!(err.contains("max_statements_per_message"), "{err}");
        }
    }

    #[test]
    fn trace_url_from_flag_or_file_links_trace_ids_and_is_checked() {
        let f = file(
            "upstream = \"postgres://file\"\ntrace_url = \"https://tempo.example/trace/{trace_id}\"\n\
             [analyzer]\nmax_routes = 7\n",
        );
        let from_file = ServeArgs {
            config: Some(f.path().to_owned()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(
            from_file
                .trace_link("0af7651916cd43dd8448eb211c80319c")
                .as_deref(),
            Some("https://tempo.example/trace/0af7651916cd43dd8448eb211c80319c")
        );
        assert_eq!(from_file.analysis.analyzer.max_routes, 7);
        let base = || ServeArgs {
            upstream: Some("postgres://h".into()),
            ..Default::default()
        };
        assert_eq!(base().resolve().unwrap().trace_link("ab"), None);
        let flag = ServeArgs {
            trace_url: Some("http://jaeger:16686/trace/{trace_id}?x=1".into()),
            config: Some(f.path().to_owned()),
            ..base()
        }
        .resolve()
        .unwrap();
        assert_eq!(
            flag.trace_link("ab").as_deref(),
            Some("http://jaeger:16686/trace/ab?x=1")
        );
        for (bad, why) in [
            ("https://tempo.example/trace/", "placeholder"),
            ("javascript:alert(1)//{trace_id}", "http"),
            ("https://t.example/{trace_id}\"><script>", "quote"),
        ] {
            let err = ServeArgs {
                trace_url: Some(bad.into()),
                ..base()
            }
            .resolve()
            .unwrap_err()
            .to_string();
            assert!(err.contains("--trace-url") && err.contains(why), "{err}");
        }
    }

    #[test]
    fn request_and_timing_thresholds_from_flags_env_names_and_file() {
        let f = file(
            "upstream = \"postgres://file\"\nquery_budget = 80\nslow_query_ms = 250\n\
             [analyzer.n_plus_one]\nwrite_threshold = 9\n\
             [analyzer.slow_query]\nmin_executions = 7\nsingle_execution = \"3s\"\n\
             [analyzer.idle_in_transaction]\nthreshold = \"2s\"\n",
        );
        let args = ServeArgs {
            config: Some(f.path().to_owned()),
            idle_in_transaction_ms: Some(1500),
            ..Default::default()
        };
        let a = args.resolve().unwrap().analysis.analyzer;
        assert_eq!(a.n_plus_one.write_threshold, 9);
        assert_eq!(a.too_many_queries.budget, 80);
        assert_eq!(a.slow_query.threshold, Duration::from_millis(250));
        assert_eq!(a.slow_query.min_executions, 7);
        assert_eq!(a.slow_query.single_execution, Duration::from_secs(3));
        // The flag wins over the file's [analyzer.idle_in_transaction].
        assert_eq!(a.idle_in_transaction.threshold, Duration::from_millis(1500));

        // The flags' environment variables are the documented ones.
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let cmd = <Cli as clap::CommandFactory>::command();
        let envs: Vec<String> = cmd
            .get_arguments()
            .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
            .collect();
        for env in [
            "QPROXY_N_PLUS_ONE_WRITE_THRESHOLD",
            "QPROXY_SLOW_QUERY_MS",
            "QPROXY_QUERY_BUDGET",
            "QPROXY_IDLE_IN_TRANSACTION_MS",
        ] {
            assert!(envs.iter().any(|e| e == env), "{env} not in {envs:?}");
        }
        let cli = Cli::try_parse_from(["qproxy", "--query-budget", "12", "--slow-query-ms", "40"])
            .unwrap();
        assert_eq!(cli.serve.query_budget, Some(12));
        assert_eq!(cli.serve.slow_query_ms, Some(40));
    }

    #[test]
    fn fleet_store_settings_from_file_flags_and_defaults() {
        let f = file(
            "upstream = \"postgres://file\"\n\
             store = \"postgres://fleet:s3cret@db.internal/findings?sslmode=disable\"\n\
             store_schema = \"staging\"\nstore_retention = \"30d\"\ninstance = \"shop-1\"\n",
        );
        let from_file = ServeArgs {
            config: Some(f.path().to_owned()),
            ..Default::default()
        };
        let c = from_file.clone().resolve_with_env(|_| None).unwrap();
        let StoreTarget::Postgres { url, schema } = &c.store else {
            panic!("{:?}", c.store)
        };
        assert_eq!(
            (url.host.as_str(), schema.as_str()),
            ("db.internal", "staging")
        );
        assert_eq!(
            c.store_writer.retention,
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(c.instance, "shop-1");
        let shown = format!("{c:?} {:?}", ServeArgs::from_file(f.path()).unwrap());
        assert!(!shown.contains("s3cret"), "{shown}");

        // Flags win; the default instance names the host and the listen address.
        let flagged = ServeArgs {
            instance: Some("shop-2".into()),
            store: Some(StoreArg::from("/var/lib/qproxy/findings.db")),
            ..from_file
        };
        let c = flagged.resolve_with_env(|_| None).unwrap();
        assert_eq!(c.instance, "shop-2");
        assert!(matches!(c.store, StoreTarget::Sqlite(_)));
        assert_eq!(
            default_instance("web-1", "0.0.0.0:6432".parse().unwrap()),
            "web-1:0.0.0.0:6432"
        );

        let base = || ServeArgs {
            upstream: Some("postgres://h".into()),
            ..Default::default()
        };
        for (args, expected) in [
            (
                ServeArgs {
                    store_retention: Some("30".into()),
                    ..base()
                },
                "store_retention: invalid duration `30`",
            ),
            (
                ServeArgs {
                    store_retention: Some("0d".into()),
                    ..base()
                },
                "more than zero",
            ),
            (
                ServeArgs {
                    instance: Some(" ".into()),
                    ..base()
                },
                "instance must be",
            ),
            (
                ServeArgs {
                    store: Some(StoreArg::from("postgres://db/x")),
                    store_schema: Some("a-b".into()),
                    ..base()
                },
                "invalid store schema name `a-b`",
            ),
        ] {
            let err = args.resolve_with_env(|_| None).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn clear_errors() {
        assert!(ServeArgs::default()
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("--upstream"));
        let half_tls = ServeArgs {
            upstream: Some("postgres://h".into()),
            tls_cert: Some("c.pem".into()),
            ..Default::default()
        };
        assert!(half_tls
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("together"));
        let f = file("upstreem = \"x\"\n");
        let typo = ServeArgs {
            config: Some(f.path().to_owned()),
            ..Default::default()
        };
        let err = typo.resolve().unwrap_err().to_string();
        assert!(err.contains("upstreem"), "{err}");
        let f = file(
            "upstream = \"postgres://h\"\n[analyzer.verification]\nconnections_per_second = 0\n",
        );
        let stalled = ServeArgs {
            config: Some(f.path().to_owned()),
            ..Default::default()
        };
        let err = stalled.resolve().unwrap_err().to_string();
        assert!(err.contains("connections_per_second"), "{err}");
    }

    fn with_upstream(url: &str) -> ServeArgs {
        ServeArgs {
            upstream: Some(url.into()),
            ..Default::default()
        }
    }

    /// An environment holding only `vars`.
    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn upstream_password_from_env_file_or_pgpassword() {
        let url = "postgres://app@db:5432/shop";
        let c = with_upstream(url)
            .resolve_with_env(env(&[(UPSTREAM_PASSWORD_ENV, "from-env")]))
            .unwrap();
        assert_eq!(c.upstream.password.as_deref(), Some("from-env"));
        assert_eq!(c.upstream_password_source, Some(PasswordSource::Env));

        // The first line of the file, without its line ending.
        let f = file("from-file\r\nignored\n");
        let args = ServeArgs {
            upstream_password_file: Some(f.path().to_owned()),
            ..with_upstream(url)
        };
        let c = args.resolve_with_env(env(&[])).unwrap();
        assert_eq!(c.upstream.password.as_deref(), Some("from-file"));
        assert_eq!(c.upstream_password_source, Some(PasswordSource::File));

        // PGPASSWORD only when nothing else gives one, as in libpq.
        let c = with_upstream(url)
            .resolve_with_env(env(&[("PGPASSWORD", "pg")]))
            .unwrap();
        assert_eq!(c.upstream.password.as_deref(), Some("pg"));
        let c = with_upstream("postgres://app:in-url@db/shop")
            .resolve_with_env(env(&[("PGPASSWORD", "pg")]))
            .unwrap();
        assert_eq!(c.upstream.password.as_deref(), Some("in-url"));
        assert_eq!(c.upstream_password_source, Some(PasswordSource::Url));
        let c = with_upstream(url).resolve_with_env(env(&[])).unwrap();
        assert_eq!(
            (c.upstream.password, c.upstream_password_source),
            (None, None)
        );
    }

    #[test]
    fn upstream_password_given_twice_or_unreadable_is_an_error() {
        let twice = with_upstream("postgres://app:in-url@db/shop")
            .resolve_with_env(env(&[(UPSTREAM_PASSWORD_ENV, "from-env")]))
            .unwrap_err()
            .to_string();
        assert!(
            twice.contains("more than once") && twice.contains(UPSTREAM_PASSWORD_ENV),
            "{twice}"
        );
        assert!(
            !twice.contains("in-url") && !twice.contains("from-env"),
            "{twice}"
        );
        let missing = ServeArgs {
            upstream_password_file: Some("/nonexistent/password".into()),
            ..with_upstream("postgres://app@db/shop")
        };
        let err = missing.resolve_with_env(env(&[])).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/password"), "{err}");
        let empty = file("\n");
        let empty = ServeArgs {
            upstream_password_file: Some(empty.path().to_owned()),
            ..with_upstream("postgres://app@db/shop")
        };
        let err = empty.resolve_with_env(env(&[])).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
    }

    #[test]
    fn no_debug_output_shows_the_upstream_password() {
        let args = with_upstream("postgres://app:hunter2@db/shop?password=hunter3");
        let shown = format!("{args:?}");
        assert!(shown.contains("app:***@db"), "{shown}");
        let config = args.resolve_with_env(env(&[])).unwrap();
        let shown = format!("{config:?} {args:?}", args = config.upstream);
        assert!(
            !shown.contains("hunter2") && !shown.contains("hunter3"),
            "{shown}"
        );
        // A URL that does not parse is not printed at all.
        let bad = with_upstream("postgres://app:hunter2@db:notaport/shop");
        assert!(!format!("{bad:?}").contains("hunter2"));
        let err = bad.resolve_with_env(env(&[])).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }
}

#[cfg(test)]
mod example {
    use super::*;

    /// The commented example in the repository root must stay loadable and
    /// must spell out the defaults.
    #[test]
    fn example_config_loads_with_default_values() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../qproxy.example.toml");
        let args = ServeArgs {
            config: Some(path),
            ..Default::default()
        };
        let c = args
            .resolve_with_env(|_| None)
            .expect("example config resolves");
        let defaults = ServeArgs {
            upstream: Some("postgres://qproxy@127.0.0.1:5432/postgres".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.listen, defaults.listen);
        assert_eq!(c.shutdown_grace, defaults.shutdown_grace);
        assert_eq!(c.max_message_bytes, defaults.max_message_bytes);
        assert_eq!(c.max_held_bytes, defaults.max_held_bytes);
        assert_eq!(c.max_startup_connections, defaults.max_startup_connections);
        assert_eq!(
            c.tracker_limits.max_statements_per_message,
            defaults.tracker_limits.max_statements_per_message
        );
        assert_eq!(c.analysis.flush_interval, defaults.analysis.flush_interval);
        assert_eq!(c.store_writer, defaults.store_writer);
        assert_eq!(c.store.to_string(), defaults.store.to_string());
        assert_eq!(c.instance, defaults.instance);
        let (a, d) = (&c.analysis.analyzer, &defaults.analysis.analyzer);
        assert_eq!(a.n_plus_one.threshold, d.n_plus_one.threshold);
        assert_eq!(
            a.n_plus_one.repeated_threshold,
            d.n_plus_one.repeated_threshold
        );
        assert_eq!(a.unindexed, d.unindexed);
        assert_eq!(a.n_plus_one.write_threshold, d.n_plus_one.write_threshold);
        assert_eq!(a.slow_query, d.slow_query);
        assert_eq!(a.too_many_queries, d.too_many_queries);
        assert_eq!(a.idle_in_transaction, d.idle_in_transaction);
        assert_eq!(a.offset_pagination, d.offset_pagination);
        assert_eq!(a.verification, d.verification);
        assert_eq!(a.unbounded.warning_rows, d.unbounded.warning_rows);
        assert_eq!(a.correlation, d.correlation);
        assert_eq!(a.max_routes, d.max_routes);
    }
}
