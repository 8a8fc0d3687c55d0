//! `qproxy serve` configuration: one struct read from flags, `QPROXY_*`
//! environment variables and a TOML file, merged as flags > env > file >
//! defaults.
//!
//! clap resolves flags over env; every field is optional there, so a value
//! missing from both is taken from the `--config` file, then from the
//! defaults ([`args`], where each default is defined once, next to its
//! flag). The file uses the same names as the flags, with underscores
//! (`admin_listen = "127.0.0.1:9930"`).
//!
//! A leaf of the crate: configuration imports no other module, so the
//! modules it configures (the tracker's caps, the analysis task's settings,
//! the upstream URL, the store target) depend on it and never the reverse.
//! - [`args`]: the flags/env/TOML struct and the defaults.
//! - [`settings`]: the tracker's and the analysis task's settings.
//! - [`upstream_url`]: parsing `postgres://` URLs (`--upstream`, `--store`).
//! - [`store`]: the `--store` value and what it names.

mod args;
pub(crate) mod settings;
mod store;
#[cfg(test)]
mod tests;
pub(crate) mod upstream_url;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use qproxy_analyzer::pipeline::DEFAULT_MAX_STATEMENTS_PER_TEXT;
use qproxy_analyzer::report::TraceUrl;
use qproxy_analyzer::store::{period, WriterConfig};

pub use args::{
    default_workers, LogFormat, ServeArgs, UpstreamArg, DEFAULT_ADMIN_LISTEN,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_EVENT_QUEUE, DEFAULT_LISTEN, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HELD_BYTES, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_METRICS_TOP_K,
    DEFAULT_SHUTDOWN_GRACE, DEFAULT_STARTUP_TIMEOUT,
};
pub use settings::{AnalysisSettings, TrackerLimits, DEFAULT_FLUSH_INTERVAL};
pub use store::{StoreArg, StoreTarget, StoreTargetError, DEFAULT_STORE, DEFAULT_STORE_SCHEMA};
pub use upstream_url::{UpstreamUrl, UrlError};

/// Problems with the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for these keys.
    #[error("invalid config file {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: toml::de::Error,
    },
    /// A required setting is missing or settings contradict each other.
    #[error("{0}")]
    Invalid(String),
    /// The upstream URL is wrong (the message never repeats the URL, which
    /// may hold a password).
    #[error(transparent)]
    Upstream(#[from] UrlError),
    /// `--store` or `--store-schema` is wrong.
    #[error(transparent)]
    Store(#[from] StoreTargetError),
    /// The upstream password file could not be read.
    #[error("cannot read the upstream password file {path}")]
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
        let seconds = |v: Option<f64>, default: Duration, name: &str| {
            let Some(s) = v else { return Ok(default) };
            Duration::try_from_secs_f64(s).map_err(|_| {
                ConfigError::Invalid(format!("{name} must be a non-negative number of seconds"))
            })
        };
        let max_message_bytes = pick!(max_message_bytes).unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
        if max_message_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "max_message_bytes must be at least 1024".into(),
            ));
        }
        let mut analysis = AnalysisSettings {
            analyzer: pick!(analyzer).unwrap_or_default(),
            flush_interval: seconds(
                pick!(flush_interval),
                DEFAULT_FLUSH_INTERVAL,
                "flush_interval",
            )?,
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
        let shutdown_grace = seconds(
            pick!(shutdown_grace),
            DEFAULT_SHUTDOWN_GRACE,
            "shutdown_grace",
        )?;
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
        let max_statements_per_message =
            pick!(max_statements_per_message).unwrap_or(DEFAULT_MAX_STATEMENTS_PER_TEXT);
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
        let max_connections = pick!(max_connections)
            .unwrap_or(DEFAULT_MAX_CONNECTIONS)
            .max(1);
        let max_startup_connections = pick!(max_startup_connections)
            .unwrap_or(max_connections / 4)
            .clamp(1, max_connections);
        let listen = pick!(listen).unwrap_or(DEFAULT_LISTEN);
        let instance = match pick!(instance) {
            Some(name) => checked_instance(name)?,
            None => default_instance(&qproxy_analyzer::store::host_name(), listen),
        };
        Ok(ServeConfig {
            listen,
            upstream,
            upstream_password_source,
            admin_listen: pick!(admin_listen).unwrap_or(DEFAULT_ADMIN_LISTEN),
            store,
            instance,
            store_writer,
            tls,
            shutdown_grace,
            startup_timeout: seconds(
                pick!(startup_timeout),
                DEFAULT_STARTUP_TIMEOUT,
                "startup_timeout",
            )?,
            connect_timeout: seconds(
                pick!(connect_timeout),
                DEFAULT_CONNECT_TIMEOUT,
                "connect_timeout",
            )?,
            max_connections,
            max_startup_connections,
            max_message_bytes,
            max_held_bytes: pick!(max_held_bytes).unwrap_or(DEFAULT_MAX_HELD_BYTES),
            event_queue: pick!(event_queue).unwrap_or(DEFAULT_EVENT_QUEUE).max(1),
            workers: pick!(workers)
                .unwrap_or_else(default_workers)
                .clamp(1, 1024),
            log_format: pick!(log_format).unwrap_or(LogFormat::DEFAULT),
            metrics_top_k: pick!(metrics_top_k).unwrap_or(DEFAULT_METRICS_TOP_K),
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
