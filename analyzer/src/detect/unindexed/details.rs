//! The evidence of `unindexed_filter` and `unindexed_sort` findings (their
//! `details`), typed so the keys cannot drift between the detector, the
//! store and the reports.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::selectivity::Partial;

/// `details` of an `unindexed_filter` or `unindexed_sort` finding.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct UnindexedDetails {
    /// The planner's row estimate of the table.
    pub rows_estimate: u64,
    /// The block's predicates on the table by kind (`equality`, `in_list`,
    /// `is_null`, `range`, `prefix_like`): column names, or expressions.
    pub predicates: BTreeMap<&'static str, Vec<String>>,
    /// The table's indexes (at most ten), as findings describe them.
    pub existing_indexes: Vec<String>,
    /// Filter: the join keys towards the tables that drive this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_columns: Option<Vec<String>>,
    /// Filter: what the column statistics estimate (see `selectivity.rs`),
    /// when the catalog has them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selectivity: Option<Value>,
    /// Filter: the foreign key the suggested index would also serve.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub foreign_key: Option<String>,
    /// Sort: the ORDER BY keys as the index would hold them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sort: Option<Vec<String>>,
    /// Sort: whether the statement has a LIMIT.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limited: Option<bool>,
    /// Sort: whether an index already narrows the rows to sort.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter_served_by_index: Option<bool>,
    /// Why the suggestion is a partial index, when it is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial_index: Option<PartialIndexDetails>,
}

/// Why a suggestion is restricted to one value of a skewed column. The
/// value is data and never shown: only its frequency is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartialIndexDetails {
    /// The skewed column.
    pub column: String,
    /// The value's share of the rows (four decimals).
    pub value_frequency: f64,
    /// The column's most common value's share (four decimals).
    pub most_common_frequency: f64,
    /// The reason, in words.
    pub why: &'static str,
}

impl PartialIndexDetails {
    pub(crate) fn of(p: &Partial) -> Self {
        PartialIndexDetails {
            column: p.column.clone(),
            value_frequency: (p.frequency * 10_000.0).round() / 10_000.0,
            most_common_frequency: (p.most_common * 10_000.0).round() / 10_000.0,
            why: "the statement compares this skewed column with one of its rare most common \
                  values (the value is data and is not shown); an index restricted to it holds \
                  only the rows the statement reads",
        }
    }
}
