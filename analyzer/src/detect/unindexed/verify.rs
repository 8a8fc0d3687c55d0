//! The verdict on a suggested index: what hypopg's two plans of a
//! statement (without and with the hypothetical index) say, and what that
//! verdict does to the finding. Pure: the connection work that gets the
//! plans is [`crate::explain::hypopg`].

use serde::Serialize;
use serde_json::{Map, Value};
use sqlparser::ast::Statement;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::{Parser, ParserError};

use crate::finding::Severity;

/// Why a suggestion that hypopg could have checked was not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// The verification queue was full when the suggestion was made.
    QueueFull,
    /// Not safe or not possible to plan as the client (see
    /// [`crate::explain`]).
    Refused,
    /// The check failed (connection, timeout, server error, a task that
    /// panicked).
    Error,
}

impl SkipReason {
    /// Every reason, in the order counters are kept.
    pub const ALL: [SkipReason; 3] = [
        SkipReason::QueueFull,
        SkipReason::Refused,
        SkipReason::Error,
    ];

    /// The name used in finding details and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::QueueFull => "queue_full",
            SkipReason::Refused => "refused",
            SkipReason::Error => "error",
        }
    }

    /// Position in [`SkipReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What the planner says about a suggested index.
#[derive(Debug, Clone, PartialEq)]
pub enum Verification {
    /// hypopg was available and both plans were read.
    Verified {
        /// Total estimated cost without the index.
        cost_before: f64,
        /// Total estimated cost with the hypothetical index.
        cost_after: f64,
        /// Whether the plan with the index uses it.
        uses_index: bool,
    },
    /// Not checked, and why (hypopg missing).
    Unverified {
        /// Human-readable reason.
        reason: String,
    },
    /// hypopg was there but the suggestion was not checked.
    Skipped {
        /// The class of reason, for counters.
        why: SkipReason,
        /// Human-readable reason; names what was refused, never a value.
        reason: String,
    },
}

impl Verification {
    /// A skipped check.
    pub fn skipped(why: SkipReason, reason: impl Into<String>) -> Self {
        Verification::Skipped {
            why,
            reason: reason.into(),
        }
    }

    /// The evidence as finding details: `{"hypopg": {"verified": true,
    /// "cost_before": .., "cost_after": .., "uses_index": ..}}`,
    /// `{"hypopg": {"verified": false, "reason": ..}}`, and for a skipped
    /// check the same plus `"skipped": "queue_full|refused|error"`.
    pub fn to_details(&self) -> Map<String, Value> {
        let hypopg = match self {
            Verification::Verified {
                cost_before,
                cost_after,
                uses_index,
            } => HypopgDetails {
                verified: true,
                cost_before: Some(*cost_before),
                cost_after: Some(*cost_after),
                uses_index: Some(*uses_index),
                ..HypopgDetails::default()
            },
            Verification::Unverified { reason } => HypopgDetails {
                reason: Some(reason),
                ..HypopgDetails::default()
            },
            Verification::Skipped { why, reason } => HypopgDetails {
                reason: Some(reason),
                skipped: Some(why.as_str()),
                ..HypopgDetails::default()
            },
        };
        let mut details = Map::new();
        if let Ok(value) = serde_json::to_value(hypopg) {
            details.insert("hypopg".into(), value);
        }
        details
    }

    /// The severity rule of a checked suggestion: one the planner would
    /// not use stays a finding, but as a note (info), not a
    /// recommendation; otherwise the detector's severity stands.
    pub fn weigh(&self, severity: Severity) -> Severity {
        if self.improves() == Some(false) {
            Severity::Info
        } else {
            severity
        }
    }

    /// `Some(true)` when the planner would use the index and it lowers
    /// the cost; `None` when not checked. A suggestion verified as useless
    /// can be dropped.
    pub fn improves(&self) -> Option<bool> {
        match self {
            Verification::Verified {
                cost_before,
                cost_after,
                uses_index,
            } => Some(*uses_index && cost_after < cost_before),
            Verification::Unverified { .. } | Verification::Skipped { .. } => None,
        }
    }
}

/// `details.hypopg` of a checked (or unchecked) index suggestion.
#[derive(Debug, Default, Serialize)]
struct HypopgDetails<'a> {
    verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    cost_before: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cost_after: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uses_index: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped: Option<&'static str>,
}

/// Why a suggested index cannot be given to hypopg.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IndexDdlError {
    /// The DDL does not parse.
    #[error("index DDL does not parse: {0}")]
    Parse(#[source] ParserError),
    /// It parses, but is not exactly one CREATE INDEX.
    #[error("expected one CREATE INDEX statement")]
    NotCreateIndex,
}

/// Why an EXPLAIN result could not be judged.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PlanError {
    /// The plan has no top-level total cost.
    #[error("unexpected EXPLAIN output: no \"Total Cost\" in the plan")]
    NoTotalCost,
}

/// `CREATE [UNIQUE] INDEX [CONCURRENTLY] ...` → the same without
/// CONCURRENTLY (hypopg wants it so); anything else is refused.
pub(crate) fn plain_create_index(ddl: &str) -> Result<String, IndexDdlError> {
    let parsed = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(ddl)
        .and_then(|mut p| p.parse_statements())
        .map_err(IndexDdlError::Parse)?;
    if !matches!(&parsed[..], [Statement::CreateIndex(_)]) {
        return Err(IndexDdlError::NotCreateIndex);
    }
    let mut text = ddl.trim().trim_end_matches(';').trim_end().to_owned();
    let lower = text.to_ascii_lowercase();
    if let Some(pos) = lower.find("concurrently") {
        if lower[..pos].trim_end().ends_with("index") {
            text.replace_range(pos..pos + "concurrently".len(), "");
        }
    }
    Ok(text)
}

/// The verdict from the plans (EXPLAIN `FORMAT JSON`) of a statement
/// without and with the hypothetical index `index_name`: their costs, and
/// whether the second uses the index anywhere.
pub(crate) fn judge_plans(
    before: &Value,
    after: &Value,
    index_name: &str,
) -> Result<Verification, PlanError> {
    Ok(Verification::Verified {
        cost_before: total_cost(before)?,
        cost_after: total_cost(after)?,
        uses_index: mentions_index(after, index_name),
    })
}

fn total_cost(plan: &Value) -> Result<f64, PlanError> {
    plan.pointer("/0/Plan/Total Cost")
        .and_then(Value::as_f64)
        .ok_or(PlanError::NoTotalCost)
}

fn mentions_index(plan: &Value, index: &str) -> bool {
    match plan {
        Value::Object(map) => map.iter().any(|(k, v)| {
            (k == "Index Name" && v.as_str() == Some(index)) || mentions_index(v, index)
        }),
        Value::Array(items) => items.iter().any(|v| mentions_index(v, index)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn concurrently_is_removed_and_other_ddl_refused() {
        assert_eq!(
            plain_create_index("CREATE INDEX CONCURRENTLY ON public.orders (user_id);").unwrap(),
            "CREATE INDEX  ON public.orders (user_id)"
        );
        assert!(plain_create_index("DROP TABLE orders").is_err());
        assert!(plain_create_index("CREATE INDEX ON t (a); DROP TABLE t").is_err());
    }

    #[test]
    fn finds_the_index_anywhere_in_the_plan() {
        let plan =
            json!([{"Plan": {"Total Cost": 8.3, "Plans": [{"Index Name": "<1>btree_t_a"}]}}]);
        assert!(mentions_index(&plan, "<1>btree_t_a"));
        assert!(!mentions_index(&plan, "<2>btree_t_b"));
        assert_eq!(total_cost(&plan).unwrap(), 8.3);
    }

    #[test]
    fn the_verdict_reads_both_plans() {
        let before = json!([{"Plan": {"Total Cost": 100.0}}]);
        let after = json!([{"Plan": {"Total Cost": 8.0, "Index Name": "<1>btree_t_a"}}]);
        let v = judge_plans(&before, &after, "<1>btree_t_a").unwrap();
        assert_eq!(v.improves(), Some(true));
        let unused = judge_plans(&before, &before, "<1>btree_t_a").unwrap();
        assert_eq!(unused.improves(), Some(false));
        assert!(judge_plans(&json!([]), &after, "x").is_err());
    }

    #[test]
    fn an_index_the_planner_would_not_use_makes_the_finding_a_note() {
        let unused = Verification::Verified {
            cost_before: 10.0,
            cost_after: 10.0,
            uses_index: false,
        };
        assert_eq!(unused.weigh(Severity::Error), Severity::Info);
        let useful = Verification::Verified {
            cost_before: 10.0,
            cost_after: 2.0,
            uses_index: true,
        };
        assert_eq!(useful.weigh(Severity::Error), Severity::Error);
        let unchecked = Verification::skipped(SkipReason::QueueFull, "full");
        assert_eq!(unchecked.weigh(Severity::Warning), Severity::Warning);
    }
}
