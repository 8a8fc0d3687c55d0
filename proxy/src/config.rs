//! `qproxy serve` configuration: one struct read from flags, `QPROXY_*`
//! environment variables and a TOML file, merged as flags > env > file >
//! defaults.
//!
//! clap resolves flags over env; every field is optional there, so a value
//! missing from both is taken from the `--config` file, then from the
//! defaults below. The file uses the same names as the flags, with
//! underscores (`admin_listen = "127.0.0.1:9930"`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::analysis::AnalysisSettings;
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
    /// The PostgreSQL server: postgres://[user[:pw]@]host[:port][/db][?sslmode=..&sslrootcert=..].
    /// Its credentials serve the proxy's catalog connection only; clients
    /// authenticate with their own.
    #[arg(long, env = "QPROXY_UPSTREAM", value_name = "URL")]
    pub upstream: Option<String>,
    /// Address of the admin HTTP server (/metrics, /healthz, /readyz) [default: 127.0.0.1:9930]
    #[arg(long, env = "QPROXY_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// Findings store (SQLite) [default: .qproxy/findings.db]
    #[arg(long, env = "QPROXY_STORE", value_name = "PATH")]
    pub store: Option<PathBuf>,
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
    /// Largest message the proxy holds whole to analyse it (Query, Parse,
    /// Bind, ...); larger ones are refused with 08P01. Results and COPY data
    /// stream through whatever their size [default: 67108864]
    #[arg(long, env = "QPROXY_MAX_MESSAGE_BYTES", value_name = "BYTES")]
    pub max_message_bytes: Option<usize>,
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
    /// Tables with fewer estimated rows are never reported as unindexed
    /// [default: 10000]
    #[arg(long, env = "QPROXY_UNINDEXED_MIN_ROWS", value_name = "ROWS")]
    pub unindexed_min_rows: Option<u64>,
    /// Fingerprints (and routes) that get their own metrics series: the
    /// first N distinct ones seen; later ones are counted under
    /// `fingerprint="other"` (`route="other"`) [default: 100]
    #[arg(long, env = "QPROXY_METRICS_TOP_K", value_name = "N")]
    pub metrics_top_k: Option<usize>,
    /// Every analyzer setting, TOML only: `[analyzer.n_plus_one]`,
    /// `[analyzer.unbounded]`, `[analyzer.unindexed]`,
    /// `[analyzer.correlation]` (see qproxy.example.toml).
    #[arg(skip)]
    pub analyzer: Option<qproxy_analyzer::pipeline::AnalyzerConfig>,
}

/// The resolved configuration the server runs with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Client listen address.
    pub listen: SocketAddr,
    /// Upstream URL as given (parsed by the server).
    pub upstream: String,
    /// Admin HTTP address.
    pub admin_listen: SocketAddr,
    /// Findings store path.
    pub store: PathBuf,
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
    /// Cap on messages held whole.
    pub max_message_bytes: usize,
    /// Analyzer queue capacity.
    pub event_queue: usize,
    /// Forwarding threads.
    pub workers: usize,
    /// Log format.
    pub log_format: LogFormat,
    /// Fingerprints (and routes) with their own metrics series.
    pub metrics_top_k: usize,
    /// Per-connection tracker caps.
    pub tracker_limits: TrackerLimits,
    /// The analysis task's settings.
    pub analysis: AnalysisSettings,
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
        if let Some(rows) = pick!(unindexed_min_rows) {
            analysis.analyzer.unindexed.min_table_rows = rows;
        }
        Ok(ServeConfig {
            listen: pick!(listen).unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default")),
            upstream,
            admin_listen: pick!(admin_listen)
                .unwrap_or_else(|| DEFAULT_ADMIN_LISTEN.parse().expect("valid default")),
            store: pick!(store).unwrap_or_else(|| PathBuf::from(DEFAULT_STORE)),
            tls,
            shutdown_grace: seconds(pick!(shutdown_grace), 30.0, "shutdown_grace")?,
            startup_timeout: seconds(pick!(startup_timeout), 15.0, "startup_timeout")?,
            connect_timeout: seconds(pick!(connect_timeout), 5.0, "connect_timeout")?,
            max_connections: pick!(max_connections).unwrap_or(10_000).max(1),
            max_message_bytes,
            event_queue: pick!(event_queue).unwrap_or(65_536).max(1),
            workers: pick!(workers)
                .unwrap_or_else(crate::workers::default_workers)
                .clamp(1, 1024),
            log_format: pick!(log_format).unwrap_or(LogFormat::Auto),
            metrics_top_k: pick!(metrics_top_k).unwrap_or(crate::metrics::DEFAULT_TOP_K),
            tracker_limits: TrackerLimits::default(),
            analysis,
        })
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
             [analyzer.n_plus_one]\nthreshold = 8\n[analyzer.unindexed]\nmin_table_rows = 500\n",
        );
        let args = ServeArgs {
            listen: Some("127.0.0.1:8000".parse().unwrap()),
            config: Some(f.path().to_owned()),
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.listen.port(), 8000);
        assert_eq!(c.upstream, "postgres://file");
        assert_eq!(c.shutdown_grace, Duration::from_millis(2500));
        assert_eq!(c.admin_listen.port(), 9930);
        assert_eq!(c.metrics_top_k, 100);
        assert_eq!(c.store, PathBuf::from(".qproxy/findings.db"));
        assert_eq!(c.analysis.analyzer.n_plus_one.threshold, 8);
        assert_eq!(c.analysis.analyzer.unindexed.min_table_rows, 500);
        assert_eq!(c.analysis.analyzer.n_plus_one.repeated_threshold, 3);
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
        let f = file("upstream = \"x\"\n[analyzer.verification]\nconnections_per_second = 0\n");
        let stalled = ServeArgs {
            config: Some(f.path().to_owned()),
            ..Default::default()
        };
        let err = stalled.resolve().unwrap_err().to_string();
        assert!(err.contains("connections_per_second"), "{err}");
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
        let c = args.resolve().expect("example config resolves");
        let defaults = ServeArgs {
            upstream: Some(c.upstream.clone()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.listen, defaults.listen);
        assert_eq!(c.shutdown_grace, defaults.shutdown_grace);
        assert_eq!(c.max_message_bytes, defaults.max_message_bytes);
        assert_eq!(c.analysis.flush_interval, defaults.analysis.flush_interval);
        let (a, d) = (&c.analysis.analyzer, &defaults.analysis.analyzer);
        assert_eq!(a.n_plus_one.threshold, d.n_plus_one.threshold);
        assert_eq!(
            a.n_plus_one.repeated_threshold,
            d.n_plus_one.repeated_threshold
        );
        assert_eq!(a.unindexed, d.unindexed);
        assert_eq!(a.verification, d.verification);
        assert_eq!(a.unbounded.warning_rows, d.unbounded.warning_rows);
        assert_eq!(a.correlation, d.correlation);
    }
}
