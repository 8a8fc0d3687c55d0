//! The pipeline's settings (the `[analyzer]` part of the config), each
//! detector's own settings composed.

use serde::Deserialize;

use super::verify_queue::VerificationConfig;
use crate::correlation::CorrelationConfig;
use crate::detect::idle_in_transaction::IdleInTransactionConfig;
use crate::detect::n_plus_one::NPlusOneConfig;
use crate::detect::slow_query::SlowQueryConfig;
use crate::detect::too_many_queries::TooManyQueriesConfig;
use crate::detect::unbounded::UnboundedConfig;
use crate::detect::unindexed::{OffsetPaginationConfig, UnindexedConfig};
use crate::routes::DEFAULT_MAX_ROUTES;

/// Settings of the whole pipeline (the `[analyzer]` part of the config).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyzerConfig {
    /// Request correlation.
    pub correlation: CorrelationConfig,
    /// N+1 and repeated-query detection.
    pub n_plus_one: NPlusOneConfig,
    /// Unbounded-SELECT detection.
    pub unbounded: UnboundedConfig,
    /// Unindexed filter and sort detection; its table-size thresholds also
    /// apply to non-sargable filters, offset pagination and unindexed
    /// foreign keys.
    pub unindexed: UnindexedConfig,
    /// Which OFFSETs count as offset pagination.
    pub offset_pagination: OffsetPaginationConfig,
    /// Slow-query detection.
    pub slow_query: SlowQueryConfig,
    /// The per-request query budget.
    pub too_many_queries: TooManyQueriesConfig,
    /// Idle-in-transaction detection.
    pub idle_in_transaction: IdleInTransactionConfig,
    /// How much hypopg verification (and catalog loading) runs.
    pub verification: VerificationConfig,
    /// Distinct SQL texts whose fingerprints (and, separately, request
    /// tags) are cached.
    pub fingerprint_cache: usize,
    /// Distinct findings held between two flushes.
    pub max_pending_findings: usize,
    /// Fingerprints whose statement facts are cached (and, separately,
    /// whose last source location and trace id are remembered).
    pub max_statement_facts: usize,
    /// Routes whose statements per request are tracked; requests of later
    /// routes are counted under `other`.
    pub max_routes: usize,
    /// Statements of one SQL text (a simple Query) that are fingerprinted;
    /// events for later ones are not expected. Set by the proxy from its
    /// `--max-statements-per-message`, not from the `[analyzer]` section.
    #[serde(skip, default = "default_max_statements_per_text")]
    pub max_statements_per_text: usize,
}

fn default_max_statements_per_text() -> usize {
    DEFAULT_MAX_STATEMENTS_PER_TEXT
}

/// Default for [`AnalyzerConfig::max_statements_per_text`].
pub const DEFAULT_MAX_STATEMENTS_PER_TEXT: usize = 1_000;

impl Default for AnalyzerConfig {
    fn default() -> Self {
        AnalyzerConfig {
            correlation: CorrelationConfig::default(),
            n_plus_one: NPlusOneConfig::default(),
            unbounded: UnboundedConfig::default(),
            unindexed: UnindexedConfig::default(),
            offset_pagination: OffsetPaginationConfig::default(),
            slow_query: SlowQueryConfig::default(),
            too_many_queries: TooManyQueriesConfig::default(),
            idle_in_transaction: IdleInTransactionConfig::default(),
            verification: VerificationConfig::default(),
            fingerprint_cache: 10_000,
            max_pending_findings: 10_000,
            max_statement_facts: 10_000,
            max_routes: DEFAULT_MAX_ROUTES,
            max_statements_per_text: DEFAULT_MAX_STATEMENTS_PER_TEXT,
        }
    }
}
