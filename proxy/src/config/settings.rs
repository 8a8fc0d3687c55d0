//! The settings structs [`ServeConfig`](super::ServeConfig) is made of,
//! each with its defaults: what the tracker and the analysis task run
//! with. Pure values, so that configuration depends on nothing the
//! settings configure.

use std::time::Duration;

use qproxy_analyzer::pipeline::{AnalyzerConfig, DEFAULT_MAX_STATEMENTS_PER_TEXT};

/// How often findings are flushed unless `--flush-interval` says.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Caps on per-connection tracking state, so a client cannot make the proxy
/// grow without bound.
#[derive(Debug, Clone, Copy)]
pub struct TrackerLimits {
    /// Replies the server may owe before the tracker gives up on the
    /// connection (a pipeline deeper than this is still forwarded).
    pub max_pending: usize,
    /// Named prepared statements remembered per connection.
    pub max_statements: usize,
    /// Named portals remembered per connection.
    pub max_portals: usize,
    /// Per-parameter hashes kept per execution (all parameters still count
    /// toward the tuple hash).
    pub max_param_hashes: usize,
    /// Rows per execution whose values are hashed for parent matching.
    pub result_rows_hashed: u64,
    /// Columns per row whose values are hashed.
    pub result_columns_hashed: usize,
    /// Values longer than this are not hashed (ids and keys are short).
    pub result_value_max_len: usize,
    /// Statements of one simple Query that are analysed; events for later
    /// ones are not built (they are counted as not analysed), so a Query of
    /// a hundred thousand statements costs the analyzer a thousand.
    pub max_statements_per_message: usize,
    /// Portals suspended mid-result (a cursor between two fetches) whose
    /// execution is kept open per connection; past it the oldest is
    /// reported with the rows fetched so far (see `tracker::suspended`).
    pub max_suspended_portals: usize,
}

impl Default for TrackerLimits {
    fn default() -> Self {
        TrackerLimits {
            max_pending: 65_536,
            max_statements: 10_000,
            max_portals: 1_000,
            max_param_hashes: 32,
            result_rows_hashed: 32,
            result_columns_hashed: 8,
            result_value_max_len: 64,
            max_statements_per_message: DEFAULT_MAX_STATEMENTS_PER_TEXT,
            max_suspended_portals: 64,
        }
    }
}

/// How the analysis task runs.
#[derive(Debug, Clone)]
pub struct AnalysisSettings {
    /// Pipeline settings.
    pub analyzer: AnalyzerConfig,
    /// How often findings are flushed (a crash loses at most this much).
    pub flush_interval: Duration,
    /// How often idle requests are ended.
    pub tick_interval: Duration,
    /// Catalog loads and hypopg verification batches running at once
    /// (each holds one connection).
    pub max_catalog_jobs: usize,
}

impl Default for AnalysisSettings {
    fn default() -> Self {
        AnalysisSettings {
            analyzer: AnalyzerConfig::default(),
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            tick_interval: Duration::from_millis(250),
            max_catalog_jobs: 2,
        }
    }
}
