//! The settings of `qproxy serve` as given (flags, `QPROXY_*` variables,
//! TOML keys), each with its default defined once, here: the `--help` text
//! and [`ServeArgs::resolve`](super::ServeArgs::resolve) read the same
//! constant. Every field is optional, so that a value missing from the
//! flags and the environment can come from the `--config` file before it
//! falls back to its default.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use qproxy_analyzer::pipeline::{AnalyzerConfig, DEFAULT_MAX_STATEMENTS_PER_TEXT};
use qproxy_analyzer::store::WriterConfig;
use serde::Deserialize;

use super::settings::DEFAULT_FLUSH_INTERVAL;
use super::store::{StoreArg, DEFAULT_STORE, DEFAULT_STORE_SCHEMA};
use super::upstream_url::UpstreamUrl;
use super::ConfigError;

/// `--listen` unless given.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 6432);
/// `--admin-listen` unless given.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9930);
/// `--shutdown-grace` unless given.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// `--startup-timeout` unless given.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
/// `--connect-timeout` unless given.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// `--max-connections` unless given.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// `--max-message-bytes` unless given.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 << 20;
/// `--max-held-bytes` unless given.
pub const DEFAULT_MAX_HELD_BYTES: usize = 256 << 20;
/// `--event-queue` unless given.
pub const DEFAULT_EVENT_QUEUE: usize = 65_536;
/// `--metrics-top-k` unless given: fingerprints (and routes) with their
/// own metrics series.
pub const DEFAULT_METRICS_TOP_K: usize = 100;

/// `--workers` unless given: half the CPUs (at least one), leaving the
/// rest to the analysis task, the database and the application.
pub fn default_workers() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cpus / 2).max(1)
}

/// The analyzer's own defaults, which the analyzer flags fall back to.
fn analyzer_default() -> AnalyzerConfig {
    AnalyzerConfig::default()
}

/// A flag's help text ending in its default, as clap prints one: the
/// flags are optional (a missing one may come from the config file), so
/// clap cannot be given the default itself.
fn with_default(help: &str, default: impl fmt::Display) -> String {
    format!("{help} [default: {default}]")
}

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

impl LogFormat {
    /// The format unless `--log-format` says.
    pub const DEFAULT: LogFormat = LogFormat::Auto;
}

impl fmt::Display for LogFormat {
    /// The name the flag takes (`auto`, `json`, `text`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match clap::ValueEnum::to_possible_value(self) {
            Some(value) => f.write_str(value.get_name()),
            None => Ok(()),
        }
    }
}

/// The settings of `qproxy serve`, as flags, env vars and TOML keys.
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    #[arg(
        long,
        env = "QPROXY_LISTEN",
        value_name = "ADDR",
        help = with_default(
            "Address clients connect to",
            DEFAULT_LISTEN
        )
    )]
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
    #[arg(
        long,
        env = "QPROXY_ADMIN_LISTEN",
        value_name = "ADDR",
        help = with_default(
            "Address of the admin HTTP server (/metrics, /healthz, /readyz)",
            DEFAULT_ADMIN_LISTEN
        )
    )]
    pub admin_listen: Option<SocketAddr>,
    // hide_env_values: --help would print the URL, password and all.
    #[arg(
        long,
        env = "QPROXY_STORE",
        value_name = "PATH|URL",
        hide_env_values = true,
        help = with_default(
            "Findings store: a SQLite file, or a postgres://[user[:pw]@]host[:port]/db[?sslmode=..] URL that many proxies share (TLS per sslmode, as for --upstream)",
            DEFAULT_STORE
        )
    )]
    pub store: Option<StoreArg>,
    #[arg(
        long,
        env = "QPROXY_STORE_SCHEMA",
        value_name = "NAME",
        help = with_default(
            "Schema of a PostgreSQL findings store; created and migrated on start",
            DEFAULT_STORE_SCHEMA
        )
    )]
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
    #[arg(
        long,
        env = "QPROXY_SHUTDOWN_GRACE",
        value_name = "SECONDS",
        help = with_default(
            "Seconds sessions get to finish after SIGTERM/SIGINT",
            DEFAULT_SHUTDOWN_GRACE.as_secs_f64()
        )
    )]
    pub shutdown_grace: Option<f64>,
    #[arg(
        long,
        env = "QPROXY_STARTUP_TIMEOUT",
        value_name = "SECONDS",
        help = with_default(
            "Seconds a client has to send its StartupMessage and to finish authenticating",
            DEFAULT_STARTUP_TIMEOUT.as_secs_f64()
        )
    )]
    pub startup_timeout: Option<f64>,
    #[arg(
        long,
        env = "QPROXY_CONNECT_TIMEOUT",
        value_name = "SECONDS",
        help = with_default(
            "Seconds to wait for the upstream's TCP connect and TLS handshake",
            DEFAULT_CONNECT_TIMEOUT.as_secs_f64()
        )
    )]
    pub connect_timeout: Option<f64>,
    #[arg(
        long,
        env = "QPROXY_MAX_CONNECTIONS",
        value_name = "N",
        help = with_default(
            "Most client connections at once; more are refused with 53300",
            DEFAULT_MAX_CONNECTIONS
        )
    )]
    pub max_connections: Option<usize>,
    /// Most connections still in startup (connected, not yet past
    /// authentication) at once, so sockets that connect and stall cannot
    /// take every connection: when all are taken, a new connection replaces
    /// the one starting up longest if that one has been at it for a second,
    /// else it is refused with 53300 [default: max_connections / 4, at least 1]
    #[arg(long, env = "QPROXY_MAX_STARTUP_CONNECTIONS", value_name = "N")]
    pub max_startup_connections: Option<usize>,
    #[arg(
        long,
        env = "QPROXY_MAX_MESSAGE_BYTES",
        value_name = "BYTES",
        help = with_default(
            "Largest message the proxy holds whole to analyse it (Query, Parse, Bind, ...); larger client messages are refused with 08P01, larger server messages (a huge error text) stream through unanalysed. Results and COPY data stream through whatever their size",
            DEFAULT_MAX_MESSAGE_BYTES
        )
    )]
    pub max_message_bytes: Option<usize>,
    #[arg(
        long,
        env = "QPROXY_MAX_HELD_BYTES",
        value_name = "BYTES",
        help = with_default(
            "Memory all sessions together may use to hold large messages whole (and the analyzer's copies of large SQL texts). A message the budget cannot cover is forwarded as it arrives, without being held, and is not analysed (counted in qproxy_statements_not_analysed_total); the client notices nothing",
            DEFAULT_MAX_HELD_BYTES
        )
    )]
    pub max_held_bytes: Option<usize>,
    #[arg(
        long,
        env = "QPROXY_MAX_STATEMENTS_PER_MESSAGE",
        value_name = "N",
        help = with_default(
            "Statements of one simple Query that are analysed; the rest are forwarded as usual and counted as not analysed (1 to 65535)",
            DEFAULT_MAX_STATEMENTS_PER_TEXT
        )
    )]
    pub max_statements_per_message: Option<usize>,
    #[arg(
        long,
        env = "QPROXY_EVENT_QUEUE",
        value_name = "N",
        help = with_default(
            "Capacity of the queue from the relay to the analyzer; when full, events are dropped and counted, never waited for",
            DEFAULT_EVENT_QUEUE
        )
    )]
    pub event_queue: Option<usize>,
    /// Threads forwarding traffic; each session stays on one [default:
    /// half the CPUs, at least 1]
    #[arg(long, env = "QPROXY_WORKERS", value_name = "N")]
    pub workers: Option<usize>,
    #[arg(
        long,
        env = "QPROXY_LOG_FORMAT",
        value_enum,
        value_name = "FORMAT",
        help = with_default(
            "Log format",
            LogFormat::DEFAULT
        )
    )]
    pub log_format: Option<LogFormat>,
    #[arg(
        long,
        env = "QPROXY_FLUSH_INTERVAL",
        value_name = "SECONDS",
        help = with_default(
            "Seconds between flushes of findings to the store; a crash loses at most this much",
            DEFAULT_FLUSH_INTERVAL.as_secs_f64()
        )
    )]
    pub flush_interval: Option<f64>,
    #[arg(
        long,
        env = "QPROXY_N_PLUS_ONE_THRESHOLD",
        value_name = "N",
        help = with_default(
            "Distinct parameter tuples of one SELECT in one request that make an N+1",
            analyzer_default().n_plus_one.threshold
        )
    )]
    pub n_plus_one_threshold: Option<u32>,
    #[arg(
        long,
        env = "QPROXY_N_PLUS_ONE_WRITE_THRESHOLD",
        value_name = "N",
        help = with_default(
            "Single-row executions of one INSERT/UPDATE/DELETE in one request, each its own round trip, that make an N+1 write",
            analyzer_default().n_plus_one.write_threshold
        )
    )]
    pub n_plus_one_write_threshold: Option<u32>,
    #[arg(
        long,
        env = "QPROXY_SLOW_QUERY_MS",
        value_name = "MS",
        help = with_default(
            "p95 latency in milliseconds from which a query is slow (one execution of 1 s or more is reported on its own)",
            analyzer_default().slow_query.threshold.as_millis()
        )
    )]
    pub slow_query_ms: Option<u64>,
    #[arg(
        long,
        env = "QPROXY_QUERY_BUDGET",
        value_name = "N",
        help = with_default(
            "Statements one request may run before it is reported as too many queries (transaction control and SET/SHOW not counted)",
            analyzer_default().too_many_queries.budget
        )
    )]
    pub query_budget: Option<u64>,
    #[arg(
        long,
        env = "QPROXY_IDLE_IN_TRANSACTION_MS",
        value_name = "MS",
        help = with_default(
            "Milliseconds a transaction may sit idle (the application sending nothing) before it is reported",
            analyzer_default().idle_in_transaction.threshold.as_millis()
        )
    )]
    pub idle_in_transaction_ms: Option<u64>,
    #[arg(
        long,
        env = "QPROXY_UNINDEXED_MIN_ROWS",
        value_name = "ROWS",
        help = with_default(
            "Tables with fewer estimated rows are never reported as unindexed",
            analyzer_default().unindexed.min_table_rows
        )
    )]
    pub unindexed_min_rows: Option<u64>,
    #[arg(
        long,
        env = "QPROXY_OFFSET_PAGINATION_MIN_OFFSET",
        value_name = "ROWS",
        help = with_default(
            "An OFFSET of at least this many rows on a large table is reported as offset pagination",
            analyzer_default().offset_pagination.min_offset
        )
    )]
    pub offset_pagination_min_offset: Option<u64>,
    #[arg(
        long,
        env = "QPROXY_METRICS_TOP_K",
        value_name = "N",
        help = with_default(
            "Fingerprints (and routes) that get their own metrics series: the first N distinct ones seen; later ones are counted under `fingerprint=\"other\"` (`route=\"other\"`)",
            DEFAULT_METRICS_TOP_K
        )
    )]
    pub metrics_top_k: Option<usize>,
    /// Link trace ids to a trace viewer: a URL with {trace_id} where the
    /// id goes (e.g. https://tempo.example/trace/{trace_id}); the same
    /// setting as `qproxy report --trace-url`
    #[arg(long, env = "QPROXY_TRACE_URL", value_name = "URL")]
    pub trace_url: Option<String>,
    #[arg(
        long,
        env = "QPROXY_STORE_PENDING_MAX",
        value_name = "N",
        hide = true,
        help = with_default(
            "Advanced: distinct findings held in memory while the findings store cannot be written (locked by another process, disk full); deltas of further findings are dropped and counted in qproxy_findings_lost_total and the report",
            WriterConfig::DEFAULT_PENDING_MAX
        )
    )]
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

impl ServeArgs {
    /// Reads a TOML config file with the same keys.
    pub fn from_file(path: &Path) -> Result<ServeArgs, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }
}
