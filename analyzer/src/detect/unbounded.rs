//! SELECTs without LIMIT/FETCH that return many rows.
//!
//! A SELECT is a candidate when it has no LIMIT or FETCH, is not
//! aggregate-only and not an EXISTS probe, and reads at least one user
//! table. It becomes a finding only when an execution actually returned at
//! least [`info_rows`](UnboundedConfig::info_rows) rows: a unique-key lookup
//! returns at most one row and so never qualifies, and a filtered query
//! that returns a handful of rows today is not worth a warning. Severity
//! follows the most rows one execution returned.

use serde::{Deserialize, Serialize};

use crate::finding::Severity;

/// Row thresholds of the unbounded-SELECT detector.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UnboundedConfig {
    /// Rows per execution from which an unbounded SELECT is reported (info).
    /// Default 100: a page size most UIs never exceed.
    pub info_rows: u64,
    /// Rows per execution that make it a warning. Default 1,000.
    pub warning_rows: u64,
    /// Rows per execution that make it an error. Default 10,000: megabytes
    /// on the wire and in the application's memory per call.
    pub error_rows: u64,
}

impl Default for UnboundedConfig {
    fn default() -> Self {
        UnboundedConfig {
            info_rows: 100,
            warning_rows: 1_000,
            error_rows: 10_000,
        }
    }
}

impl UnboundedConfig {
    /// The severity for an execution that returned `rows`, or `None` when
    /// it is below the reporting threshold.
    pub fn severity(&self, rows: u64) -> Option<Severity> {
        if rows >= self.error_rows {
            Some(Severity::Error)
        } else if rows >= self.warning_rows {
            Some(Severity::Warning)
        } else if rows >= self.info_rows {
            Some(Severity::Info)
        } else {
            None
        }
    }
}

/// How the rows of an unbounded SELECT were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    /// By one execution.
    Execution,
    /// Through a SQL cursor's FETCHes, added up.
    Cursor,
}

/// `details` of an `unbounded_select` finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnboundedDetails {
    /// The reporting threshold in force ([`UnboundedConfig::info_rows`]).
    pub rows_threshold: u64,
    /// Said when the rows were fetched through a SQL cursor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fetched: Option<&'static str>,
}

/// One execution (or cursor) of a candidate that returned enough rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnboundedSelect {
    /// Rows it returned.
    pub rows: u64,
    /// From [`UnboundedConfig::severity`].
    pub severity: Severity,
    /// The evidence.
    pub details: UnboundedDetails,
}

/// Judges a candidate ([`is_candidate`]) that returned `rows`: `None`
/// below the reporting threshold.
pub fn evaluate(
    config: &UnboundedConfig,
    rows: u64,
    returned: Returned,
) -> Option<UnboundedSelect> {
    let severity = config.severity(rows)?;
    Some(UnboundedSelect {
        rows,
        severity,
        details: UnboundedDetails {
            rows_threshold: config.info_rows,
            fetched: match returned {
                Returned::Execution => None,
                Returned::Cursor => Some("through a SQL cursor: the rows of all its FETCHes"),
            },
        },
    })
}

/// Whether a statement can be an unbounded SELECT at all.
pub fn is_candidate(
    is_select: bool,
    has_limit: bool,
    aggregate_only: bool,
    exists_only: bool,
    tables: &[String],
) -> bool {
    is_select
        && !has_limit
        && !aggregate_only
        && !exists_only
        && tables.iter().any(|t| is_user_table(t))
}

/// System catalogs are read by every ORM and tool; they are not the
/// application's data.
fn is_user_table(t: &str) -> bool {
    let t = t.trim_matches('"');
    !(t.starts_with("pg_") || t.starts_with("pg_catalog.") || t.starts_with("information_schema."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_by_rows() {
        let c = UnboundedConfig::default();
        assert_eq!(c.severity(99), None);
        assert_eq!(c.severity(100), Some(Severity::Info));
        assert_eq!(c.severity(5_000), Some(Severity::Warning));
        assert_eq!(c.severity(999), Some(Severity::Info));
        assert_eq!(c.severity(1_000), Some(Severity::Warning));
        assert_eq!(c.severity(9_999), Some(Severity::Warning));
        assert_eq!(c.severity(10_000), Some(Severity::Error));
    }

    #[test]
    fn a_verdict_carries_its_threshold_and_how_rows_were_read() {
        let c = UnboundedConfig::default();
        assert_eq!(evaluate(&c, 99, Returned::Execution), None);
        let v = evaluate(&c, 1_000, Returned::Execution).unwrap();
        assert_eq!(v.severity, Severity::Warning);
        assert_eq!(
            serde_json::to_value(&v.details).unwrap(),
            serde_json::json!({"rows_threshold": 100})
        );
        let cursor = evaluate(&c, 100, Returned::Cursor).unwrap();
        assert_eq!(
            serde_json::to_value(&cursor.details).unwrap(),
            serde_json::json!({
                "rows_threshold": 100,
                "fetched": "through a SQL cursor: the rows of all its FETCHes",
            })
        );
    }

    #[test]
    fn candidates() {
        let users = vec!["users".to_string()];
        assert!(is_candidate(true, false, false, false, &users));
        assert!(!is_candidate(true, true, false, false, &users));
        assert!(!is_candidate(true, false, true, false, &users));
        assert!(!is_candidate(true, false, false, true, &users));
        assert!(!is_candidate(false, false, false, false, &users));
        assert!(!is_candidate(
            true,
            false,
            false,
            false,
            &["pg_catalog.pg_class".into()]
        ));
        assert!(!is_candidate(true, false, false, false, &[]));
    }
}
